"""Roles over scopes: what each role may do, and a 403 that names the role to ask for."""

from __future__ import annotations

import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from keylife.api.auth import hash_token
from keylife.common.scopes import COMMAND_SCOPES, ROLES, SCOPES, effective_scopes, role_for
from keylife.config import Scope, Token
from keylife.journal.reader import iter_entries
from tests.server import Live, live_server

NOW = "2026-11-28T10:00:00Z"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with live_server(tmp_path) as server:
        with server.client("ingest") as c:
            for n in range(1, 6):
                for kind in ("generated", "activated"):
                    event = {"id": f"{kind}-{n}", "type": kind, "key_id": f"k-{n}", "occurred_at": NOW}
                    assert c.post("/v1/events", json=event).status_code == 200
        yield server


def _command(live: Live, token: str, key: str, command: str) -> tuple[int, dict]:
    with live.client(token) as c:
        r = c.post(f"/v1/keys/{key}/commands", json={"command": command, "reason": "role test"})
        return r.status_code, r.json()


def test_the_config_knows_every_scope_and_roles_only_grant_known_scopes() -> None:
    assert set(typing.get_args(Scope)) == set(SCOPES)
    for scopes in ROLES.values():
        assert scopes <= set(SCOPES)
    assert set(COMMAND_SCOPES.values()) <= ROLES["security-admin"]


def test_roles_grow_in_power_and_admin_keeps_its_old_meaning() -> None:
    assert ROLES["viewer"] < ROLES["auditor"] < ROLES["security-admin"]
    assert ROLES["viewer"] < ROLES["operator"] < ROLES["security-admin"]
    assert not ROLES["auditor"] & {"suspend", "revoke", "destroy", "bulk", "lockdown", "release", "incident"}
    legacy = effective_scopes(None, ["admin"])
    assert set(COMMAND_SCOPES.values()) <= legacy
    assert role_for("revoke") == "security-admin" and role_for("suspend") == "operator"
    assert role_for("audit") == "auditor" and role_for("ingest") is None


def test_operator_suspends_but_may_not_revoke_and_is_told_whom_to_ask(live: Live) -> None:
    status, body = _command(live, "operator", "k-1", "suspend")
    assert (status, body["state"]) == (200, "suspended")
    status, body = _command(live, "operator", "k-1", "reactivate")
    assert (status, body["state"]) == (200, "active")
    status, body = _command(live, "operator", "k-2", "revoke")
    assert status == 403
    assert body["required_scope"] == "revoke" and body["required_role"] == "security-admin"
    assert body["detail"] == "token 'operator' (role operator) lacks the 'revoke' scope; the security-admin role has it"
    refused = [e.event for e in iter_entries(live.runtime.journal.directory) if e.event["type"] == "auth_failure"]
    assert refused and refused[-1]["actor"] == "operator" and refused[-1]["attributes"]["code"] == "403"
    with live.client("read") as c:
        assert c.get("/v1/keys/k-2").json()["state"] == "active"  # nothing happened


@pytest.mark.parametrize(
    ("token", "command", "role"),
    [
        ("viewer", "suspend", "operator"),
        ("auditor", "suspend", "operator"),
        ("auditor", "revoke", "security-admin"),
        ("operator", "destroy", "security-admin"),
        ("operator", "deactivate", "security-admin"),
        ("read", "compromise", "security-admin"),
    ],
)
def test_every_refused_command_names_the_role_that_may(live: Live, token: str, command: str, role: str) -> None:
    status, body = _command(live, token, "k-3", command)
    assert status == 403, body
    assert body["type"].endswith("/forbidden")
    assert body["required_scope"] == COMMAND_SCOPES[command] and body["required_role"] == role


def test_security_admin_and_the_legacy_admin_scope_run_any_command(live: Live) -> None:
    assert _command(live, "secadmin", "k-4", "revoke")[1]["state"] == "revoked"
    assert _command(live, "admin", "k-5", "compromise")[1]["state"] == "compromised"


def test_read_only_roles_read_and_machine_scopes_name_no_role(live: Live) -> None:
    for token in ("viewer", "auditor", "operator", "secadmin"):
        with live.client(token) as c:
            assert c.get("/v1/keys").status_code == 200
    with live.client("auditor") as c:
        r = c.post("/v1/events", json={"id": "x", "type": "usage_report", "key_id": "k-1", "occurred_at": NOW,
                                        "usage": {"sign": 1}})  # fmt: skip
    assert r.status_code == 403
    assert r.json()["required_scope"] == "ingest" and "required_role" not in r.json()


def test_a_token_needs_a_role_or_scopes() -> None:
    with pytest.raises(ValueError, match="needs a role"):
        Token(name="nobody", sha256="0" * 64)
    with pytest.raises(ValueError):
        Token(name="x", sha256="0" * 64, role="superuser")  # type: ignore[arg-type]
    assert Token(name="ops", sha256="0" * 64, role="operator").scopes == []


def _keylife(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keylife.cli", *args], capture_output=True, text=True, timeout=60)


def test_token_create_with_a_role_prints_config_serve_accepts() -> None:
    made = _keylife("token", "create", "--name", "oncall", "--role", "operator")
    assert made.returncode == 0, made.stderr
    token = made.stderr.split(": ")[-1].strip()
    snippet = yaml.safe_load(made.stdout.split("\n", 1)[1])
    assert snippet == [{"name": "oncall", "sha256": hash_token(token), "role": "operator"}]
    Token.model_validate(snippet[0])
    none = _keylife("token", "create", "--name", "x")
    assert none.returncode == 2 and "--role" in none.stderr
