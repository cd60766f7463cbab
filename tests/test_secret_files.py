"""One rule for every secret file: owner-only (no group or other bits), one refusal message, created 0600.

Each kind of secret keylife reads is refused at 0644 and at 0640 (the ssl-cert group convention)
with the same message naming the path, and accepted at 0600 and 0400.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from audit_forwarder.shipper.settings import TlsClientSettings
from audit_forwarder.sinks.loki import LokiSinkConfig
from audit_forwarder.sinks.splunk_hec import SplunkHecSinkConfig
from keylife.cli.config import ConfigError, load
from keylife.cli.forward_cli import _reporter
from keylife.cli.main import main
from keylife.cli.runtime import ensure_token_file
from keylife.common.secret_files import SecretFileError, create_secret_file, read_secret_text
from keylife.journal.signing import Signer
from tests.server import start_server
from tests.tls_helpers import make_server_cert


def refusal(path: Path, mode: int) -> str:
    """The one message shape, whatever the secret: it names the file and the mode, never the content."""
    return rf"{re.escape(str(path))} is readable by others \(mode {mode:o}\); chmod 600 it"


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    _, cert, key = make_server_cert(tmp_path / "tls")
    return cert, key


def _signing_key(path: Path, _: Path) -> None:
    Signer.load_or_create(path, "test.keylife/secrets")


def _admin_token(path: Path, _: Path) -> None:
    ensure_token_file(path)


def _api_tls_key(path: Path, cert: Path) -> None:
    try:
        load(None, env={"KEYLIFE_LISTEN__TLS_CERT": str(cert), "KEYLIFE_LISTEN__TLS_KEY": str(path)})
    except ConfigError as exc:
        raise SecretFileError(str(exc)) from None


def _sink_client_key(path: Path, cert: Path) -> None:
    TlsClientSettings(cert_file=cert, key_file=path)


def _loki_bearer(path: Path, _: Path) -> None:
    LokiSinkConfig(name="loki", type="loki", url="http://127.0.0.1:3100", bearer_token_file=path)


def _loki_password(path: Path, _: Path) -> None:
    LokiSinkConfig(name="loki", type="loki", url="http://127.0.0.1:3100", basic_user="u", basic_password_file=path)


def _splunk_token(path: Path, _: Path) -> None:
    SplunkHecSinkConfig(name="hec", type="splunk_hec", url="http://127.0.0.1:8088", token_file=path)


def _forwarder_report_token(path: Path, _: Path) -> None:
    _reporter(load(None, env={"KEYLIFE_FORWARDER__REPORT_TOKEN_FILE": str(path)}))


def _cli_token_file(path: Path, tmp: Path) -> None:
    events = tmp / "events.ndjson"
    events.write_text("{}\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # a port nothing listens on: an accepted token gets as far as connecting
        code = main(["ingest", str(events), "--url", "http://127.0.0.1:1", "--token-file", str(path)])
    assert code == 2
    if "cannot reach POST http://127.0.0.1:1/v1/events" not in err.getvalue():
        raise SecretFileError(err.getvalue())


SECRETS: dict[str, Callable[[Path, Path], None]] = {
    "journal signing key": _signing_key,
    "local admin token": _admin_token,
    "API TLS private key": _api_tls_key,
    "sink mTLS client key": _sink_client_key,
    "Loki bearer token": _loki_bearer,
    "Loki password": _loki_password,
    "Splunk HEC token": _splunk_token,
    "forwarder report token": _forwarder_report_token,
    "keylife ingest --token-file": _cli_token_file,
}


def _secret_content(kind: str, key: Path) -> bytes:
    if kind == "journal signing key":
        path = key.with_name("made-signing.key")
        if not path.exists():
            Signer.load_or_create(path, "test.keylife/secrets")
        return path.read_bytes()
    if kind in ("API TLS private key", "sink mTLS client key"):
        return key.read_bytes()
    return b"kl_secret-token-value\n"


@pytest.mark.parametrize("kind", SECRETS)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_secret_others_can_read_is_refused_with_one_message(
    kind: str, mode: int, tmp_path: Path, tls: tuple[Path, Path]
) -> None:
    cert, key = tls
    path = tmp_path / "secret"
    path.write_bytes(_secret_content(kind, key))
    path.chmod(mode)
    with pytest.raises((SecretFileError, ValidationError)) as raised:
        SECRETS[kind](path, cert if "TLS" in kind or "mTLS" in kind else tmp_path)
    assert re.search(refusal(path, mode), str(raised.value)), str(raised.value)
    assert b"kl_secret" not in str(raised.value).encode()


def test_the_cli_says_the_same_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "token"
    path.write_text("kl_secret-token-value\n")
    path.chmod(0o644)
    events = tmp_path / "events.ndjson"
    events.write_text("{}\n")
    assert main(["ingest", str(events), "--token-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"keylife: token file {refusal(path, 0o644)}\n", err), err


@pytest.mark.parametrize("kind", SECRETS)
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_an_owner_only_secret_is_accepted(kind: str, mode: int, tmp_path: Path, tls: tuple[Path, Path]) -> None:
    cert, key = tls
    path = tmp_path / "secret"
    path.write_bytes(_secret_content(kind, key))
    path.chmod(mode)
    SECRETS[kind](path, cert if "TLS" in kind or "mTLS" in kind else tmp_path)


def test_the_rule_applies_to_what_a_symlink_points_at(tmp_path: Path) -> None:
    """Kubernetes mounts secrets as symlinks into ..data/: the target's mode is what counts."""
    target = tmp_path / "real.token"
    target.write_text("kl_x\n")
    target.chmod(0o644)
    link = tmp_path / "token"
    link.symlink_to(target)
    with pytest.raises(SecretFileError, match=refusal(link, 0o644)):
        read_secret_text(link, "token file")
    target.chmod(0o400)
    assert read_secret_text(link, "token file") == "kl_x"


def test_secret_files_are_created_0600_in_a_0700_directory_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "admin.token"
    create_secret_file(path, b"kl_one\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(FileExistsError):
        create_secret_file(path, b"kl_two\n")
    assert path.read_bytes() == b"kl_one\n"


# ----- the local admin token of a real `keylife serve` (issue 10, item 21) ---------------------------------
def _serve_config(tmp_path: Path) -> Path:
    config = tmp_path / "keylife.yaml"  # no api.tokens: serve makes and uses the local admin token
    config.write_text(
        yaml.safe_dump(
            {"data_dir": str(tmp_path / "data"), "listen": {"port": 0}, "journal": {"origin": "test.keylife/secrets"}}
        )
    )
    return config


def test_serve_creates_the_local_admin_token_0600_in_a_0700_directory(tmp_path: Path) -> None:
    import httpx

    old = os.umask(0o022)  # the usual umask: the 0600/0700 must come from keylife, not from it
    try:
        proc, url = start_server(_serve_config(tmp_path), tmp_path / "ready.json")
    finally:
        os.umask(old)
    try:
        token_file = tmp_path / "data" / "tokens" / "admin.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        signing = tmp_path / "data" / "keys" / "journal-signing.key"
        assert stat.S_IMODE(signing.stat().st_mode) == 0o600
        assert stat.S_IMODE(signing.parent.stat().st_mode) == 0o700
        token = token_file.read_text().strip()
        answer = httpx.get(f"{url}/v1/keys", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200  # the token in the file is the one the server accepts
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_serve_refuses_a_local_admin_token_others_can_read(tmp_path: Path) -> None:
    import subprocess
    import sys

    token_file = tmp_path / "data" / "tokens" / "admin.token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("kl_secret-token-value\n")
    token_file.chmod(0o644)
    keylife = Path(sys.executable).with_name("keylife")
    result = subprocess.run(
        [str(keylife), "serve", "--config", str(_serve_config(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert re.fullmatch(rf"keylife: token file {refusal(token_file, 0o644)}\n", result.stderr), result.stderr
    assert "kl_secret" not in result.stderr + result.stdout


def test_a_secret_file_made_by_racing_threads_is_never_read_half_written(tmp_path: Path) -> None:
    """Many sources make the same key on first use at once: the loser of the race must read the
    winner's whole file, never a prefix (a torn PEM once failed ``serve``'s DataFold poller)."""
    import threading

    from keylife.common.secret_files import create_secret_file, read_secret_file

    payload = b"secret:" + b"A" * 200_000 + b"\n"  # large enough that a reader can catch a partial write
    for round_ in range(20):
        path = tmp_path / f"client-{round_}.pem"
        seen: list[bytes] = []
        start = threading.Barrier(8)

        def make(path: Path = path, seen: list[bytes] = seen, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                create_secret_file(path, payload)
            except FileExistsError:
                seen.append(read_secret_file(path, "test key"))

        threads = [threading.Thread(target=make) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(seen) == 7 and all(data == payload for data in seen)
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
