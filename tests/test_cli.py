"""The keylife command as an operator uses it, against a real `keylife serve` subprocess."""

from __future__ import annotations

import signal
import sqlite3
import ssl
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from keylife.api.auth import hash_token
from tests.server import start_server

NOW = "2026-11-28T10:00:00Z"


def keylife(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "keylife.cli", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"keylife {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def dump(path: Path) -> dict[str, list]:
    db = sqlite3.connect(path)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    out = {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    db.close()
    return out


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    made = keylife("token", "create", "--name", "ops", "--scopes", "ingest,read,admin")
    token = made.stderr.split(": ")[-1].strip()
    snippet = yaml.safe_load(made.stdout.split("\n", 1)[1])
    assert snippet == [{"name": "ops", "sha256": hash_token(token), "scopes": ["admin", "ingest", "read"]}]
    config = tmp_path / "keylife.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "listen": {"port": 0},
                "journal": {"origin": "test.keylife/cli"},
                "api": {"tokens": snippet},
            }
        )
    )
    token_file = tmp_path / "token"
    token_file.touch(mode=0o600)  # a secret file: keylife refuses one that others can read
    token_file.write_text(token)
    return config, token_file


def test_ingest_query_rebuild_and_journal_commands(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, token_file = setup
    events = [{"id": f"g{n}", "type": "generated", "key_id": f"k{n}", "occurred_at": NOW} for n in range(5)]
    events += [{"id": f"a{n}", "type": "activated", "key_id": f"k{n}", "occurred_at": NOW} for n in range(3)]
    good = tmp_path / "events.ndjson"
    good.write_bytes(b"\n".join(orjson.dumps(e) for e in events))
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(orjson.dumps(events[0]) + b"\n\n{broken\n")
    proc, url = start_server(config, tmp_path / "ready.json")
    try:
        posted = keylife("ingest", str(good), "--url", url, "--token-file", str(token_file), "--batch", "3")
        assert orjson.loads(posted.stdout) == {"accepted": 8, "duplicate": 0}
        refused = keylife("ingest", str(bad), "--url", url, "--token-file", str(token_file), check=False)
        assert refused.returncode == 1 and "line 3:" in refused.stderr and "malformed JSON" in refused.stderr
        second = keylife("serve", "--config", str(config), check=False)
        assert second.returncode == 2 and f"in use by keylife serve (pid {proc.pid})" in second.stderr
        busy = keylife("registry", "rebuild", "--config", str(config), check=False)
        assert busy.returncode == 2 and "stop it first" in busy.stderr
        listed = keylife("keys", "list", "--config", str(config)).stdout.splitlines()
        assert len(listed) == 5  # reading beside a running server is fine
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    active = keylife("keys", "list", "--config", str(config), "--state", "active").stdout.splitlines()
    assert [orjson.loads(line)["key_id"] for line in active] == ["k0", "k1", "k2"]
    shown = orjson.loads(keylife("keys", "show", "k4", "--config", str(config)).stdout)
    assert shown["state"] == "pre_activation"
    assert keylife("keys", "show", "nope", "--config", str(config), check=False).returncode == 1

    rebuilt = tmp_path / "rebuilt.sqlite"
    keylife("registry", "rebuild", "--config", str(config), "--output", str(rebuilt))
    assert dump(rebuilt) == dump(tmp_path / "data/registry.sqlite")

    pubkey = keylife("journal", "pubkey", "--config", str(config)).stdout.strip()
    assert pubkey.startswith("test.keylife/cli+")
    checkpoint = keylife("journal", "checkpoint", "--config", str(config)).stdout
    assert checkpoint.split("\n")[:2] == ["test.keylife/cli", "8"]
    saved = tmp_path / "published.checkpoint"
    saved.write_text(checkpoint)
    verified = keylife("verify", "--config", str(config), "--key", pubkey, "--checkpoint", str(saved))
    assert "OK: 8 entries" in verified.stdout


def test_bad_config_stops_start_up_naming_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("listen:\n  port: -1\n")
    result = keylife("serve", "--config", str(config), check=False)
    assert result.returncode == 2 and "listen.port" in result.stderr


def test_serves_https_when_given_a_certificate(tmp_path: Path) -> None:
    import httpx

    from tests.tls_helpers import make_server_cert

    ca, cert, key = make_server_cert(tmp_path / "tls")
    config = tmp_path / "keylife.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "listen": {"port": 0, "tls_cert": str(cert), "tls_key": str(key)},
                "journal": {"origin": "test.keylife/tls"},
            }
        )
    )
    trust = ssl.create_default_context(cafile=str(ca))
    proc, url = start_server(config, tmp_path / "ready.json", verify=trust)
    try:
        assert url.startswith("https://127.0.0.1:")
        assert httpx.get(f"{url}/healthz", verify=trust).json() == {"status": "ok"}
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/healthz")  # verification stays on: an unknown CA is refused
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_half_a_tls_pair_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "k.yaml"
    config.write_text(yaml.safe_dump({"listen": {"tls_cert": str(config)}}))
    result = keylife("serve", "--config", str(config), check=False)
    assert result.returncode == 2 and "tls_cert and tls_key go together" in result.stderr


def test_standalone_exporter_serves_an_existing_registry(setup: tuple[Path, Path], tmp_path: Path) -> None:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    config, token_file = setup
    events = [{"id": f"g{n}", "type": "generated", "key_id": f"k{n}", "occurred_at": NOW,
               "algorithm": "rsa", "key_size": 1024, "purpose": "signing"} for n in range(3)]  # fmt: skip
    good = tmp_path / "events.ndjson"
    good.write_bytes(b"\n".join(orjson.dumps(e) for e in events))
    proc, url = start_server(config, tmp_path / "ready.json")
    try:
        keylife("ingest", str(good), "--url", url, "--token-file", str(token_file))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    exporter = subprocess.Popen(
        [sys.executable, "-m", "keylife.cli", "exporter", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert exporter.stdout is not None
        line = exporter.stdout.readline()
        metrics_url = line.split("serving ")[1].split(" ")[0]
        text = httpx.get(metrics_url, timeout=10).text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families(text) for s in fam.samples}  # fmt: skip
        labels = (("algorithm", "rsa"), ("purpose", "signing"), ("state", "pre_activation"))
        assert samples[("keylife_keys", labels)] == 3
        assert samples[("keylife_keys_noncompliant", (("rule", "min_key_size"),))] == 3
        assert samples[("keylife_journal_entries", ())] == 3
        assert samples[("keylife_registry_lag_entries", ())] == 0
    finally:
        exporter.send_signal(signal.SIGTERM)
        assert exporter.wait(timeout=60) == 0
