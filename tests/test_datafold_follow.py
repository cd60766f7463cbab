"""The DataFold log file follower and its runner: whole lines across appends, rotation and
truncation, a position that survives restarts (nothing skipped, nothing doubled), and the
durability rule: the position moves only past lines whose events were acknowledged and never
past ``adapter.safe_position``. Real files, a fake adapter and a fake sink."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from keylife.datafold.contract import Line
from keylife.datafold.follow import FileFollower
from keylife.datafold.runner import Runner, file_runner, run_file
from keylife.datafold.sinks import SinkUnavailable

FAST = {"poll_interval": 0.01, "batch_seconds": 0.01, "retry_initial": 0.01, "retry_max": 0.05}


class FakeAdapter:
    """One event per line; lines starting with ``u`` are "usage": held (no event, position held)
    until ``flush()`` with no bound, like the real adapter's open aggregates."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.held: dict[str, list[Line]] = {}

    def feed(self, line: Line) -> list[dict[str, Any]]:
        self.seen.append(line.text)
        if line.text.startswith("u"):
            self.held.setdefault(line.source, []).append(line)
            return []
        return [{"id": f"ev-{line.text}", "text": line.text, "node": line.node}]

    def flush(self, upto: Any = None) -> list[dict[str, Any]]:
        if upto is not None:
            return []  # never due during a test: only the end of a non-following read emits
        out = [{"id": f"usage-{line.text}", "text": line.text} for lines in self.held.values() for line in lines]
        self.held.clear()
        return out

    def safe_position(self, source: str) -> int | None:
        lines = self.held.get(source)
        return min(line.position for line in lines) if lines else None


class FakeSink:
    def __init__(self, failures: int = 0, on_fail: Callable[[], None] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.failures = failures
        self.on_fail = on_fail
        self.calls = 0

    def submit(self, events: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            if self.on_fail:
                self.on_fail()
            raise SinkUnavailable("keylife is down (fake)")
        self.events.extend(events)

    @property
    def texts(self) -> list[str]:
        return [e["text"] for e in self.events]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


@contextmanager
def following(path: Path, adapter: FakeAdapter, sink: FakeSink, state: Path) -> Iterator[Runner]:
    stop = threading.Event()
    runner = file_runner(path, adapter, sink, state, True, stop, node="node-a", **FAST)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def append(path: Path, data: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(data)


def state_of(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes())


def test_append_partial_rotate_truncate_and_restart_lose_and_repeat_nothing(tmp_path: Path) -> None:
    log, state = tmp_path / "node.log", tmp_path / "state" / "node.json"
    log.write_text("a1\na2\na3-part")
    first, sink = FakeAdapter(), FakeSink()
    with following(log, first, sink, state):
        wait_for(lambda: first.seen == ["a1", "a2"])
        time.sleep(0.05)
        assert first.seen == ["a1", "a2"]  # the partial line waits for its newline
        append(log, "-done\na4\n")
        wait_for(lambda: len(first.seen) == 4)
        os.rename(log, tmp_path / "node.log.1")  # rotation: the writer still holds the old file...
        append(tmp_path / "node.log.1", "a5\n")  # ...and writes one more line before it reopens
        log.write_text("b1\nb2\n")
        wait_for(lambda: len(first.seen) == 7)
        os.truncate(log, 0)  # copytruncate
        append(log, "c1\n")
        wait_for(lambda: len(first.seen) == 8)
    assert first.seen == ["a1", "a2", "a3-part-done", "a4", "a5", "b1", "b2", "c1"]
    saved = state_of(state)
    assert saved["inode"] == os.stat(log).st_ino and saved["offset"] == 3  # "c1\n" of the new life of node.log

    append(log, "c2\n")  # written while stopped
    second = FakeAdapter()
    with following(log, second, sink, state):
        wait_for(lambda: second.seen == ["c2"])
        os.rename(log, tmp_path / "node.log.2")
        append(tmp_path / "node.log.2", "c3\n")
        log.write_text("d1\n")
        wait_for(lambda: len(second.seen) == 3)
    # rotated again while stopped: the rotated file got a line more, and the new one has lines
    append(tmp_path / "node.log.2", "c4\n")
    os.rename(log, tmp_path / "node.log.3")
    append(tmp_path / "node.log.3", "d2\n")
    log.write_text("e1\n")
    third = FakeAdapter()
    with following(log, third, sink, state):
        wait_for(lambda: len(third.seen) == 2)
    assert second.seen == ["c2", "c3", "d1"]
    assert third.seen == ["d2", "e1"]  # resumed inside node.log.3 (found beside the path), then the new file
    everything = first.seen + second.seen + third.seen
    assert sink.texts == everything and len(set(everything)) == len(everything)
    assert {e["node"] for e in sink.events} == {"node-a"}


def test_a_failing_sink_holds_the_position_until_the_retry_delivers(tmp_path: Path) -> None:
    log, state = tmp_path / "node.log", tmp_path / "node.json"
    log.write_text("x1\nx2\n")
    adapter, sink = FakeAdapter(), FakeSink()
    with following(log, adapter, sink, state):
        wait_for(lambda: state.exists() and state_of(state)["offset"] == 6)
        offsets: list[int] = []
        sink.failures, sink.on_fail = 3, lambda: offsets.append(state_of(state)["offset"])
        append(log, "x3\nx4\n")
        wait_for(lambda: len(sink.events) == 4)
        wait_for(lambda: state_of(state)["offset"] == 12)
    assert offsets == [6, 6, 6]  # while the sink failed the position stayed before x3
    assert adapter.seen == ["x1", "x2", "x3", "x4"] and sink.texts == adapter.seen

    # Not following: the run fails and saves nothing; the next run delivers from the same place.
    append(log, "x5\n")
    with pytest.raises(SinkUnavailable):
        run_file(log, FakeAdapter(), FakeSink(failures=1), state, False, **FAST)
    assert state_of(state)["offset"] == 12
    again, good = FakeAdapter(), FakeSink()
    run_file(log, again, good, state, False, **FAST)
    assert again.seen == good.texts == ["x5"] and state_of(state)["offset"] == 15


def test_safe_position_holds_the_persisted_position_back(tmp_path: Path) -> None:
    log, state = tmp_path / "node.log", tmp_path / "node.json"
    log.write_text("x1\nu2\nx3\n")
    first, sink = FakeAdapter(), FakeSink()
    with following(log, first, sink, state):
        wait_for(lambda: sink.texts == ["x1", "x3"])
        wait_for(lambda: state.exists() and state_of(state)["offset"] == 3)
    assert state_of(state)["offset"] == 3  # u2 (at 3) is still held in an aggregate: not past it

    second = FakeAdapter()  # the aggregate died with the first run: its line is read again
    run_file(log, second, sink, state, False, **FAST)
    assert second.seen == ["u2", "x3"]
    assert sink.texts == ["x1", "x3", "x3", "u2"]  # x3 again: keylife answers it as a duplicate
    assert state_of(state)["offset"] == 9  # the whole file read: every aggregate emitted
    third = FakeAdapter()
    run_file(log, third, sink, state, False, **FAST)
    assert third.seen == []


def test_a_position_held_in_a_rotated_file_resumes_there(tmp_path: Path) -> None:
    log, state = tmp_path / "node.log", tmp_path / "node.json"
    log.write_text("x1\nu2\nx3\n")
    first, sink = FakeAdapter(), FakeSink()
    with following(log, first, sink, state):
        wait_for(lambda: len(first.seen) == 3)
        os.rename(log, tmp_path / "node.log.1")
        log.write_text("y1\ny2\n")
        wait_for(lambda: len(first.seen) == 5)
        old = os.stat(tmp_path / "node.log.1")
        wait_for(lambda: state.exists() and (state_of(state)["inode"], state_of(state)["offset"]) == (old.st_ino, 3))
    assert (state_of(state)["inode"], state_of(state)["offset"]) == (old.st_ino, 3)
    second = FakeAdapter()
    run_file(log, second, sink, state, False, **FAST)
    assert second.seen == ["u2", "x3", "y1", "y2"]
    assert state_of(state)["inode"] == os.stat(log).st_ino and state_of(state)["offset"] == 6


def test_positions_keep_increasing_across_truncation(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    log.write_text("aaaa\nbb\n")
    follower = FileFollower(log, None, poll_interval=0.001)
    got = follower.read(timeout=0)
    assert got is not None and [(line.position, end) for line, end in got] == [(0, 5), (5, 8)]
    os.truncate(log, 0)
    log.write_text("c\n")
    for _ in range(3):
        got = follower.read(timeout=0)
        if got:
            break
    assert got is not None and [(line.text, line.position, end) for line, end in got] == [("c", 8, 10)]
    follower.close()


def test_a_file_rewritten_in_place_while_stopped_is_read_from_its_start(tmp_path: Path) -> None:
    log, state = tmp_path / "node.log", tmp_path / "node.json"
    log.write_text("old1\nold2\n")
    run_file(log, FakeAdapter(), FakeSink(), state, False, **FAST)
    with open(log, "r+", encoding="utf-8") as handle:  # same inode, new content, longer than the offset
        handle.truncate(0)
        handle.write("new1\nnew2\nnew3\n")
    again = FakeAdapter()
    run_file(log, again, FakeSink(), state, False, **FAST)
    assert again.seen == ["new1", "new2", "new3"]  # the head hash told the files apart


def test_line_endings_bad_bytes_and_a_final_unterminated_line(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    log.write_bytes(b"crlf\r\n\xff\xfebad\n\nlast")
    adapter = FakeAdapter()
    run_file(log, adapter, FakeSink(), None, False, **FAST)
    assert adapter.seen == ["crlf", "\ufffd\ufffdbad", "", "last"]  # not following: the file is complete


def test_a_missing_file_fails_a_one_off_read_and_is_waited_for_when_following(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    with pytest.raises(FileNotFoundError):
        run_file(log, FakeAdapter(), FakeSink(), None, False, **FAST)
    adapter = FakeAdapter()
    with following(log, adapter, FakeSink(), tmp_path / "s.json"):
        time.sleep(0.05)
        log.write_text("hello\n")
        wait_for(lambda: adapter.seen == ["hello"])
