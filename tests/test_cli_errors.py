"""What an operator sees when a `keylife` command cannot run: one line on stderr, exit code 2, no traceback.

Each case runs the installed ``keylife`` entry point in a subprocess, the way an operator types it.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keylife import __version__
from keylife.cli.main import build_parser

KEYLIFE = Path(sys.executable).with_name("keylife")


def keylife(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KEYLIFE), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=_env(), check=False
    )


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("KEYLIFE_")}


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Assert the failure looks as an operator should see it, and return the line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("keylife: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.touch(mode=0o600)
    path.write_text("kl_not-a-real-token\n")
    return path


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.ndjson"
    path.write_text('{"id": "e1", "type": "generated", "key_id": "k1", "occurred_at": "2026-11-28T10:00:00Z"}\n')
    return path


def test_port_in_use_fails_before_anything_is_created(tmp_path: Path, taken_port: int) -> None:
    data = tmp_path / "data"
    result = keylife("serve", "--data-dir", str(data), "--port", str(taken_port))
    one_line_error(result, f"cannot listen on 127.0.0.1:{taken_port}", "Address already in use")
    assert not (data / "keys").exists() and not (data / "tokens").exists()  # no signing key, no admin token
    assert not data.exists()


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("no-such-host.invalid", "cannot listen on no-such-host.invalid:0"),  # does not resolve
        ("256.1.2.3", "cannot listen on 256.1.2.3:0"),  # not an address
        ("192.0.2.1", "Cannot assign requested address"),  # TEST-NET-1: an address, but not this host's
    ],
)
def test_a_bad_host_is_one_line(tmp_path: Path, host: str, why: str) -> None:
    data = tmp_path / "data"
    one_line_error(keylife("serve", "--data-dir", str(data), "--host", host, "--port", "0"), why)
    assert not data.exists()


def test_a_missing_token_file_is_one_line(tmp_path: Path, events: Path) -> None:
    missing = tmp_path / "missing.token"
    one_line_error(keylife("ingest", str(events), "--token-file", str(missing)), str(missing), "No such file")


def test_no_token_at_all_is_one_line(events: Path) -> None:
    one_line_error(keylife("ingest", str(events)), "give --token-file or set KEYLIFE_TOKEN")


def test_a_missing_input_file_is_one_line(tmp_path: Path, token: Path) -> None:
    one_line_error(keylife("ingest", "missing.ndjson", "--token-file", str(token), cwd=tmp_path), "missing.ndjson")


def test_a_server_that_cannot_be_reached_is_one_line(events: Path, token: Path) -> None:
    result = keylife("ingest", str(events), "--url", "http://127.0.0.1:1", "--token-file", str(token))
    one_line_error(result, "cannot reach POST http://127.0.0.1:1/v1/events", "Connection refused")
    listed = keylife("keys", "list", "--url", "http://127.0.0.1:1", "--token-file", str(token))
    one_line_error(listed, "cannot reach GET http://127.0.0.1:1/v1/keys")


@pytest.mark.parametrize("command", [["serve"], ["keys", "list"], ["registry", "rebuild"], ["journal", "pubkey"]])
def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "data"
    data.write_text("not a directory\n")
    one_line_error(keylife(*command, "--data-dir", str(data), "--port", "0")
                   if command == ["serve"] else keylife(*command, "--data-dir", str(data)),
                   f"data_dir {data} is not a directory")  # fmt: skip


def test_rebuild_without_a_journal_is_one_line(tmp_path: Path) -> None:
    result = keylife("registry", "rebuild", "--data-dir", str(tmp_path / "data"))
    one_line_error(result, "is not a keylife journal")


def test_an_unknown_state_is_a_usage_error_not_an_empty_list(tmp_path: Path) -> None:
    result = keylife("keys", "list", "--state", "bogus", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert "argument --state: invalid choice: 'bogus'" in result.stderr and "Traceback" not in result.stderr


def test_version() -> None:
    result = keylife("--version")
    assert result.returncode == 0 and result.stdout == f"keylife {__version__}\n"


def _parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for sub, child in action.choices.items():
                assert helps.get(sub), f"'{name} {sub}' has no help line"
                yield from _parsers(child, f"{name} {sub}")


def test_every_option_of_every_command_has_help() -> None:
    seen = 0
    for name, parser in _parsers(build_parser(), "keylife"):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            label = "/".join(action.option_strings) or action.dest
            assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, f"{name} {label}"
            seen += 1
    assert seen > 60  # the walk reached the subcommands


@pytest.mark.parametrize("name", ["ops\n  - name: evil", "ops\n", "_under", "a b"])
def test_token_create_refuses_a_name_the_config_would_refuse(name: str) -> None:
    """The printed lines are pasted into YAML: a name with a newline would inject config lines."""
    result = keylife("token", "create", "--name", name, "--scopes", "read")
    one_line_error(result, "--name")
    assert result.stdout == ""


def test_token_create_prints_lines_the_config_accepts() -> None:
    import yaml

    from keylife.cli.config import Config

    result = keylife("token", "create", "--name", "grafana.reader", "--scopes", "read,ingest")
    assert result.returncode == 0, result.stderr
    snippet = result.stdout.split("\n", 1)[1]
    config = Config.model_validate({"api": {"tokens": yaml.safe_load(snippet)}})
    assert config.api.tokens[0].name == "grafana.reader"
    assert config.api.tokens[0].scopes == ["ingest", "read"]
