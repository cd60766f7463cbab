"""One background job at a time, whose failure the owner sees on its next poll.

Why: the journal writer's thread answers producers. Work it must do about once a second but
that no answer waits for (signing and fsyncing a checkpoint, three fsyncs) runs here instead,
so a producer whose request arrives meanwhile is not held behind it. The owner decides when to
start a job and when to wait; a job's exception is kept and raised by ``raise_failure`` on the
owner's thread, where the retry and degradation logic lives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class BackgroundJob:
    """Runs ``fn`` on a daemon thread; never two at once."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def busy(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self, fn: Callable[[], object]) -> None:
        if self.busy:
            raise RuntimeError(f"{self._name} is still running")

        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # handed to the owner, who retries or degrades
                self._error = exc

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()

    def wait(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.join()

    def raise_failure(self) -> None:
        """Raise (once) what the last job raised."""
        error, self._error = self._error, None
        if error is not None:
            raise error
