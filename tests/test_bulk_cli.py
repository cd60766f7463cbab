"""``keylife bulk ...`` and ``keylife incident lockdown|release`` against a live server: output and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from keylife.cli.main import main
from tests.bulk_helpers import make_keys, states
from tests.server import live_server


def test_plan_execute_wait_status_and_a_stale_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with live_server(tmp_path) as live, live.client() as admin:
        make_keys(admin, ["a1", "a2", "b1"], owner="team-a")
        monkeypatch.setenv("KEYLIFE_TOKEN", live.tokens["secadmin"])
        server = ["--url", live.url]
        assert main(["bulk", "plan", "--owner", "team-a", "--action", "suspend", "--reason", "r", *server]) == 0
        out = capsys.readouterr().out
        plan = out.split()[1].rstrip(":")
        assert "suspend 3 keys" in out and "  a1\n" in out
        assert main(["bulk", "execute", plan, "--wait", *server]) == 0
        assert f"plan {plan} finished: 3 done, 0 refused" in capsys.readouterr().out
        assert states(admin, ["a1", "a2", "b1"]) == {"a1": "suspended", "a2": "suspended", "b1": "suspended"}
        assert main(["bulk", "status", plan, *server]) == 0
        assert "3 done" in capsys.readouterr().out
        # a plan whose set changed: exit 2, one line naming the difference
        assert main(["bulk", "plan", "--state", "suspended", "--action", "revoke", "--reason", "r", *server]) == 0
        stale = capsys.readouterr().out.split()[1].rstrip(":")
        make_keys(admin, ["c1"], active=True)
        assert admin.post("/v1/keys/c1/commands", json={"command": "suspend", "reason": "x"}).status_code == 200
        assert main(["bulk", "execute", stale, *server]) == 2
        err = capsys.readouterr().err
        assert "HTTP 409" in err and "1 keys added" in err and "added: c1" in err and "Traceback" not in err


def test_lockdown_and_release_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with live_server(tmp_path) as live, live.client() as admin:
        make_keys(admin, ["n1", "n2"], node="node-3")
        server = ["--url", live.url]
        monkeypatch.setenv("KEYLIFE_TOKEN", live.tokens["operator"])
        assert main(["incident", "lockdown", "--node", "node-3", "--reason", "breach", *server]) == 0
        out = capsys.readouterr().out
        assert "2 of 2 active keys suspended" in out
        lockdown = out.split()[1].rstrip(":")
        assert main(["incident", "release", lockdown, *server]) == 2  # an operator may not release
        assert "HTTP 403" in capsys.readouterr().err
        assert admin.post("/v1/keys/n2/commands", json={"command": "revoke", "reason": "x"}).status_code == 200
        monkeypatch.setenv("KEYLIFE_TOKEN", live.tokens["secadmin"])
        assert main(["incident", "release", lockdown, *server]) == 1  # n2 was left alone: a person should know
        out = capsys.readouterr().out
        assert "1 of 2 keys reactivated" in out and "left alone n2 (now revoked" in out
        assert states(admin, ["n1", "n2"]) == {"n1": "active", "n2": "revoked"}


def test_destroy_approval_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with live_server(tmp_path) as live, live.client() as admin, live.client("secadmin") as first:
        make_keys(admin, ["old"], active=False)
        approval = first.post("/v1/keys/old/commands", json={"command": "destroy", "reason": "r"}).json()["approval"]
        monkeypatch.setenv("KEYLIFE_TOKEN", live.tokens["secadmin"])
        assert main(["bulk", "approve", approval, "--url", live.url]) == 2
        assert "HTTP 403" in capsys.readouterr().err
        monkeypatch.setenv("KEYLIFE_TOKEN", live.tokens["secadmin2"])
        assert main(["bulk", "approve", approval, "--url", live.url]) == 0
        assert "granted" in capsys.readouterr().out
        assert states(admin, ["old"]) == {"old": "destroyed"}
