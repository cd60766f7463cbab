"""The log side of C2SP tlog-witness: ask each configured witness to cosign the latest checkpoint.

A background thread, off the ack path: it reads the writer's latest checkpoint (a plain
attribute read) and, at most every ``interval`` seconds, asks every witness in parallel to
cosign it, sending ``old <size>`` = the size that witness last cosigned and the RFC 6962
consistency proof from there (computed from the persisted tree under the journal's lock, as
the proof API does). Checkpoints signed while a round runs are coalesced: the next round takes
the latest. A 409 answer carries the witness's size (``text/x.tlog.size``): the client takes it
and retries once with the proof from that size. Cosignatures are checked against the witness's
key and stored (``cosigned.CosignatureStore``) before they count.

Metrics: ``keylife_witness_requests_total{witness,result}``, ``keylife_witness_cosigned_entries{witness}``,
``keylife_witness_last_cosigned_timestamp_seconds{witness}`` and ``keylife_journal_cosigned_entries``
(the largest checkpoint holding a quorum). One log line per change of a witness's state, not per failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from keylife.journal.cosignature import CosignerKey, valid_cosigners
from keylife.journal.note import Checkpoint, NoteError, parse
from keylife.witness.cosigned import CosignatureStore
from keylife.witness.protocol import parse_size, render_request

log = logging.getLogger("keylife.witness.client")

Prove = Callable[[int, int], list[bytes]]  # (old size, new size) -> consistency proof


@dataclass(frozen=True)
class WitnessTarget:
    name: str  # a label for logs and metrics
    url: str  # the witness's submission prefix; add-checkpoint is appended
    key: CosignerKey


class ClientMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "keylife_witness_requests", "add-checkpoint requests to witnesses, by witness and result.",
            ["witness", "result"], registry=registry,
        )  # fmt: skip
        self.size = Gauge(
            "keylife_witness_cosigned_entries", "Size of the latest checkpoint each witness cosigned.",
            ["witness"], registry=registry,
        )  # fmt: skip
        self.when = Gauge(
            "keylife_witness_last_cosigned_timestamp_seconds", "When each witness last returned a valid cosignature.",
            ["witness"], registry=registry,
        )  # fmt: skip
        self.quorum = Gauge(
            "keylife_journal_cosigned_entries", "Size of the latest checkpoint cosigned by a quorum of witnesses.",
            registry=registry,
        )  # fmt: skip


class WitnessClient:
    def __init__(
        self,
        store: CosignatureStore,
        targets: list[WitnessTarget],
        latest: Callable[[], Checkpoint | None],
        prove: Prove,
        registry: CollectorRegistry,
        *,
        quorum: int,
        interval: float = 10.0,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.store = store
        self.targets = targets
        self.latest = latest
        self.prove = prove
        self.quorum = quorum
        self.interval = interval
        self.metrics = ClientMetrics(registry)
        self.known: dict[str, int] = {}  # witness name -> size it last cosigned (0: ask it)
        self.state: dict[str, str] = {}  # witness name -> last outcome, logged when it changes
        self._client = httpx.Client(timeout=timeout, transport=transport)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done: dict[str, str] = {}  # witness name -> body of the checkpoint it cosigned last
        if store.latest is not None:
            for target, _stamp in _cosigners(store.latest, targets):
                self.known[target.name] = store.latest.size
                self.metrics.size.labels(target.name).set(store.latest.size)
            self._publish(store.latest)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="witness-client", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop asking. A request in flight is abandoned (its daemon thread ends with the process), so a
        hanging witness never delays shutdown by more than a second."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            if self._thread.is_alive():
                return  # still waiting on a witness: closing the client under it would only race
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.round()
            except Exception:  # a bug here must not end witnessing for the process's life
                log.exception("witness round failed")
            self._stop.wait(max(0.2, self.interval - (time.monotonic() - started)))

    def round(self) -> None:
        """Ask every witness that has not cosigned the latest checkpoint, in parallel, to cosign it.
        A witness that failed or refused is asked again next round (one log line per state change)."""
        cp = self.latest()
        if cp is None or cp.size == 0:
            return
        due = [t for t in self.targets if self._done.get(t.name) != cp.text]
        if len(due) == 1:
            self.submit(due[0], cp)
            return
        threads = [
            threading.Thread(target=self.submit, args=(t, cp), name=f"witness-{t.name}", daemon=True) for t in due
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def submit(self, target: WitnessTarget, cp: Checkpoint) -> str:
        """One add-checkpoint exchange (with one retry on 409); returns the outcome recorded."""
        old = self.known.get(target.name, 0)
        for attempt in (1, 2):
            result, detail, size = self._post(target, cp, old)
            if result == "conflict" and attempt == 1 and size is not None and size <= cp.size:
                old = size
                self.known[target.name] = size
                continue
            break
        self.metrics.requests.labels(target.name, result).inc()
        self._state(target, result, detail)
        return result

    def _post(self, target: WitnessTarget, cp: Checkpoint, old: int) -> tuple[str, str, int | None]:
        if old > cp.size:
            return "ahead", f"the witness holds size {old}, beyond this journal's checkpoint {cp.size}", None
        try:
            proof = self.prove(old, cp.size) if 0 < old < cp.size else []
        except ValueError as exc:
            return "no_proof", f"no consistency proof from size {old}: {exc}", None
        url = target.url.rstrip("/") + "/add-checkpoint"
        try:
            response = self._client.post(url, content=render_request(old, proof, cp.render()))
        except httpx.HTTPError as exc:
            return "unreachable", f"{type(exc).__name__}: {exc}", None
        if response.status_code == 409 and response.headers.get("content-type", "").startswith("text/x.tlog.size"):
            try:
                size = parse_size(response.content)
            except ValueError as exc:
                return "bad_answer", str(exc), None
            return "conflict", f"409: the witness holds size {size}, not {old}", size
        if response.status_code != 200:
            text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
            return f"http_{response.status_code}", f"{response.status_code}: {text}", None
        try:
            cosigned = parse(cp.render() + response.text)
        except NoteError as exc:
            return "bad_answer", f"the answer is not signature lines: {exc}", None
        if not _cosigners(cosigned, [target]):
            return "bad_cosignature", "no valid cosignature by the configured witness key in the answer", None
        own = [line + "\n" for line in response.text.splitlines() if line.split(" ")[1:2] == [target.key.name]]
        try:
            merged = self.store.add(target.name, cp, "".join(own))
        except OSError as exc:  # not stored, so it does not count: asked again next round
            return "store_failed", f"the cosignature could not be stored: {exc.strerror or exc}", None
        self.known[target.name] = cp.size
        self._done[target.name] = cp.text
        self.metrics.size.labels(target.name).set(cp.size)
        self.metrics.when.labels(target.name).set(time.time())
        self._publish(merged)
        return "cosigned", f"cosigned size {cp.size}", None

    def _publish(self, merged: Checkpoint) -> None:
        if len(_cosigners(merged, self.targets)) >= self.quorum:
            self.metrics.quorum.set(merged.size)

    def _state(self, target: WitnessTarget, result: str, detail: str) -> None:
        previous = self.state.get(target.name)
        self.state[target.name] = result
        if result == previous:
            return
        if result == "cosigned":
            log.info("witness %s cosigns again: %s", target.name, detail) if previous else log.info(
                "witness %s: %s", target.name, detail
            )
        else:
            log.warning("witness %s does not cosign (%s): %s", target.name, result, detail)


def _cosigners(cp: Checkpoint, targets: list[WitnessTarget]) -> list[tuple[WitnessTarget, int]]:
    by_key = {t.key: t for t in targets}
    return [(by_key[key], stamp) for key, stamp in valid_cosigners(cp, list(by_key))]
