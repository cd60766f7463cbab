"""deploy/systemd: the units pass ``systemd-analyze verify`` (which also checks that ExecStart
exists: the tests point it at this checkout's keylife), are hardened as the README says, and give
keylife serve the descriptors its default connection cap needs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ci import REPO, require_binary

UNITS = REPO / "deploy" / "systemd"
COMMANDS = {"keylife.service": "serve", "keylife-forward.service": "forward", "keylife-exporter.service": "exporter"}
NAMES = list(COMMANDS)
INSTALLED = "/opt/keylife/bin/keylife"  # where deploy/systemd/README.md installs it


def _analyze() -> str:
    return require_binary("systemd-analyze", "apt-get install systemd (.ci/run installs it)")


def _local_copies(tmp: Path) -> list[Path]:
    """The units with ExecStart on this checkout's keylife (verify refuses a missing binary)."""
    keylife = str(Path(sys.executable).with_name("keylife"))
    copies = []
    for name in NAMES:
        text = (UNITS / name).read_text()
        assert INSTALLED in text
        (tmp / name).write_text(text.replace(INSTALLED, keylife))
        copies.append(tmp / name)
    return copies


def _service(name: str) -> dict[str, list[str]]:
    """The [Service] section, each key with all its values (systemd keys repeat)."""
    values: dict[str, list[str]] = {}
    section = None
    for line in (UNITS / name).read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_units_verify_clean(tmp_path: Path) -> None:
    """verify exits 0 even on an unknown key or a bad value: it only warns, so stderr must be empty."""
    done = subprocess.run([_analyze(), "verify", *map(str, _local_copies(tmp_path))], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "")


def test_verify_catches_a_typo(tmp_path: Path) -> None:
    (unit,) = [u for u in _local_copies(tmp_path) if u.name == "keylife.service"]
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    done = subprocess.run([_analyze(), "verify", str(unit)], capture_output=True, text=True)
    assert "Unknown key 'ProtectSytem'" in done.stderr


@pytest.mark.parametrize("name", NAMES)
def test_hardened(name: str) -> None:
    service = _service(name)
    assert service["ProtectSystem"] == ["strict"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["StateDirectory"] == ["keylife"]
    assert service["User"] == ["keylife"] and "DynamicUser" not in service
    assert service["CapabilityBoundingSet"] == [""]
    command = service["ExecStart"][0].split()
    assert command[:2] == [INSTALLED, COMMANDS[name]]


@pytest.mark.parametrize("name", NAMES)
def test_exposure_is_low(name: str, tmp_path: Path) -> None:
    """systemd's own hardening score (0 best, 10 worst); the shipped units measure 1.4."""
    (unit,) = [u for u in _local_copies(tmp_path) if u.name == name]
    done = subprocess.run(
        [_analyze(), "security", "--offline=yes", str(unit)], capture_output=True, text=True, cwd=tmp_path
    )
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert level, done.stdout + done.stderr
    assert float(level.group(1)) <= 2.0


def test_nofile_fits_the_default_connection_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the unit's LimitNOFILE, keylife serve keeps its full default of 1000 connections."""
    import resource

    from keylife.api import http_guard

    limit = int(_service("keylife.service")["LimitNOFILE"][0])
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (limit, limit))
    cap, backlog = http_guard.listener_limits(None)
    assert cap == http_guard.DEFAULT_MAX_CONNECTIONS == 1000
    assert cap + backlog + http_guard.FD_RESERVE <= limit


def test_sysusers_names_the_unit_user() -> None:
    line = (UNITS / "keylife.sysusers.conf").read_text().splitlines()[-1].split()
    assert line[:2] == ["u", "keylife"] and "/var/lib/keylife" in line
