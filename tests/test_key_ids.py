"""Key ids round-trip through every interface (issue 10, item 7).

The id alphabet allows '/', which ingest accepted while ``GET /v1/keys/{id}`` and the commands
answered 404. The routes now take the rest of the path (raw '/' or ``%2F``), the CLI reads the
registry by id, and the DataFold key names are exactly keylife's key ids.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from keylife.datafold import build
from keylife.domain.events import Event
from tests.server import Live, live_server

NOW = "2026-11-28T10:00:00Z"
KEY_ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,60}", fullmatch=True)


def encoded(key_id: str) -> str:
    return "/v1/keys/" + quote(key_id, safe="")


def raw(key_id: str) -> str:
    """The id as typed: '/' unescaped (only '%' must be escaped, and the alphabet has none)."""
    return "/v1/keys/" + key_id


def _has_dot_segment(key_id: str) -> bool:
    # httpx (like browsers and curl) removes "." and ".." segments from a raw path: send those
    # ids %2F-encoded, as keylife's own client does.
    return any(part in (".", "..") for part in key_id.split("/"))


def _round_trip(live: Live, key_id: str, path: str) -> None:
    with live.client() as c:
        generated = {"id": f"g:{key_id}", "type": "generated", "key_id": key_id, "occurred_at": NOW}
        assert c.post("/v1/events", json=generated).status_code == 200
        got = c.get(path)
        assert got.status_code == 200, (key_id, path, got.text)
        assert got.json()["key_id"] == key_id and got.json()["state"] == "pre_activation"
        done = c.post(path + "/commands", json={"command": "activate", "reason": "round trip"})
        assert done.status_code == 200, (key_id, path, done.text)
        assert done.json()["state"] == "active"
        assert c.get(path).json()["state"] == "active"


@pytest.mark.parametrize(
    "key_id", ["a/b", "a/b/commands", "commands", "x/commands/commands", "a//b", "a/./b", "a/../b", "k+1=@:x"]
)
def test_ids_with_slashes_work_encoded_and_raw(tmp_path: Path, key_id: str) -> None:
    with live_server(tmp_path) as live:
        _round_trip(live, key_id, encoded(key_id))
        if not _has_dot_segment(key_id):
            with live.client() as c:
                assert c.get(raw(key_id)).json()["key_id"] == key_id
                again = c.post(raw(key_id) + "/commands", json={"command": "suspend", "reason": "raw"})
                assert again.status_code == 200 and again.json()["state"] == "suspended"
        with live.client() as c:
            missing = c.get(encoded(key_id + "/nope"))
            assert missing.status_code == 404 and repr(key_id + "/nope") in missing.json()["detail"]


def test_any_valid_id_round_trips_through_the_api(tmp_path: Path) -> None:
    with live_server(tmp_path) as live:
        seen: set[str] = set()

        @settings(max_examples=40, deadline=None)
        @given(key_id=KEY_ID, use_raw=st.booleans())
        def check(key_id: str, use_raw: bool) -> None:
            if key_id in seen:
                return
            seen.add(key_id)
            path = raw(key_id) if use_raw and not _has_dot_segment(key_id) else encoded(key_id)
            _round_trip(live, key_id, path)

        check()


def test_the_cli_shows_a_key_with_a_slash(tmp_path: Path) -> None:
    with live_server(tmp_path) as live:
        _round_trip(live, "team/app/k1", encoded("team/app/k1"))
        data_dir = live.runtime.config.data_dir
        origin = live.runtime.config.journal.origin
    config = tmp_path / "keylife.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(data_dir), "journal": {"origin": origin}}))
    shown = subprocess.run(
        [sys.executable, "-m", "keylife.cli", "keys", "show", "team/app/k1", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert '"key_id": "team/app/k1"' in shown.stdout.replace('":"', '": "')


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(KEY_ID, KEY_ID.map(lambda k: k + "\n"), st.text(max_size=20), st.just("a" * 257)))
def test_datafold_key_names_are_exactly_keylife_key_ids(value: str) -> None:
    """What the DataFold mapping takes for a key id is what the event model accepts, so a key a
    node names is never refused (or stored under another name) on the way to the registry."""
    try:
        Event.model_validate({"id": "e", "type": "generated", "key_id": value, "occurred_at": NOW})
        accepted = True
    except ValidationError:
        accepted = False
    assert build.is_key_id(value) == accepted


def test_datafold_master_key_of_a_node_with_a_slash_round_trips(tmp_path: Path) -> None:
    key_id = build.master_key("rack-1/node-7")
    event = build.make("df-1", "generated", key_id, NOW, node="rack-1/node-7")
    with live_server(tmp_path) as live, live.client() as c:
        assert c.post("/v1/events", json=event).status_code == 200
        assert c.get(encoded(key_id)).json()["key_id"] == "datafold-master:rack-1/node-7"
        assert c.get(raw(key_id)).json()["key_id"] == "datafold-master:rack-1/node-7"
