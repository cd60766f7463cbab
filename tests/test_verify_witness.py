"""``keylife verify --witness K [--witness-quorum N]``: k-of-n witness cosignatures as a trusted anchor."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from keylife.cli.config import ConfigError, load
from keylife.journal.cosignature import Cosigner
from keylife.journal.note import parse
from keylife.witness.cosigned import LATEST_NAME, LOG_NAME, CosignatureStore
from tests.journal_helpers import signer
from tests.test_tamper import build, cli_verify


def cosigners(tmp: Path, count: int) -> list[Cosigner]:
    return [Cosigner.load_or_create(tmp / f"w{n}.key", f"w{n}.test/witness")[0] for n in range(1, count + 1)]


def journal(tmp: Path) -> Path:
    """A closed journal with its verifier key beside it, as serve leaves it."""
    sign = signer(tmp)
    directory = build(tmp, sign)
    (directory / "verifier.key").write_text(sign.verifier.encode() + "\n")
    return directory


def journal_cosigned_by(tmp: Path, witnesses: list[Cosigner]) -> Path:
    directory = journal(tmp)
    cp = parse((directory / "checkpoint").read_text())
    store = CosignatureStore(directory)
    for w in witnesses:
        store.add(w.key.name, cp, w.line(cp.text))
    return directory


def keys(witnesses: list[Cosigner]) -> list[str]:
    return [arg for w in witnesses for arg in ("--witness", w.key.encode())]


def test_k_of_n_cosignatures_anchor(tmp_path: Path) -> None:
    w = cosigners(tmp_path, 3)
    directory = journal_cosigned_by(tmp_path, w[:2])
    result = cli_verify(directory, *keys(w), "--witness-quorum", "2")
    assert result.returncode == 0, result.stdout
    assert "ANCHORED: entries 0..39 by the checkpoint cosigned by 2 of 3 witnesses" in result.stdout


def test_fewer_than_k_says_how_many_of_which(tmp_path: Path) -> None:
    w = cosigners(tmp_path, 3)
    directory = journal_cosigned_by(tmp_path, w[:1])
    result = cli_verify(directory, *keys(w))  # default quorum: all three
    assert result.returncode == 1
    assert (
        "no checkpoint carries 3 valid cosignatures of the 3 given witnesses; the best (size 40) has 1: w1.test/witness"
        in result.stdout
    )
    assert "FAULT unanchored" in result.stdout


def test_a_tampered_cosignature_does_not_count(tmp_path: Path) -> None:
    w = cosigners(tmp_path, 1)
    directory = journal_cosigned_by(tmp_path, w)
    note = (directory / LATEST_NAME).read_text()
    line = note.rstrip("\n").split("\n")[-1]
    blob = bytearray(base64.b64decode(line.split(" ")[2]))
    blob[20] ^= 1
    (directory / LATEST_NAME).write_text(note.replace(line.split(" ")[2], base64.b64encode(bytes(blob)).decode()))
    (directory / LOG_NAME).unlink()
    result = cli_verify(directory, *keys(w))
    assert result.returncode == 1 and "the best (size 40) has 0: none" in result.stdout


def test_a_cosigned_checkpoint_given_on_the_command_line_anchors(tmp_path: Path) -> None:
    w = cosigners(tmp_path, 1)
    directory = journal_cosigned_by(tmp_path, w)
    saved = tmp_path / "cosigned.checkpoint"
    saved.write_text((directory / LATEST_NAME).read_text())
    (directory / LATEST_NAME).unlink()
    (directory / LOG_NAME).unlink()
    assert cli_verify(directory, *keys(w)).returncode == 1
    result = cli_verify(directory, *keys(w), "--checkpoint", str(saved))
    assert result.returncode == 0 and "cosigned by 1 of 1 witnesses" in result.stdout


def test_json_reports_the_witness_anchor(tmp_path: Path) -> None:
    w = cosigners(tmp_path, 1)
    directory = journal_cosigned_by(tmp_path, w)
    report = json.loads(cli_verify(directory, *keys(w), "--json").stdout)
    assert report["ok"] and report["witness_anchored"] == 40 and report["anchored"] == 40


def test_without_witnesses_the_gap_is_named(tmp_path: Path) -> None:
    directory = journal(tmp_path)
    result = cli_verify(directory, "--allow-unanchored")
    assert "that independent witnesses saw this history: no --witness given" in result.stdout
    assert "not supported yet" not in result.stdout


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--witness-quorum", "2"], "--witness-quorum 2: give 1 to 1"),
        (["--witness-quorum", "0"], "--witness-quorum 0: give 1 to 1"),
    ],
)
def test_a_bad_quorum_is_refused(tmp_path: Path, args: list[str], why: str) -> None:
    w = cosigners(tmp_path, 1)
    directory = journal_cosigned_by(tmp_path, w)
    result = cli_verify(directory, *keys(w), *args)
    assert result.returncode == 2 and why in result.stderr and "Traceback" not in result.stderr


def test_a_bad_witness_key_is_refused(tmp_path: Path) -> None:
    directory = journal(tmp_path)
    result = cli_verify(directory, "--witness", "w+00000000+AAAA")
    assert result.returncode == 2 and "witness key" in result.stderr and "Traceback" not in result.stderr


def test_config_names_a_bad_witness(tmp_path: Path) -> None:
    config = tmp_path / "k.yaml"
    config.write_text("journal:\n  witnesses:\n    - {name: a, url: 'http://127.0.0.1:1', key: 'w+00000000+AAAA'}\n")
    with pytest.raises(ConfigError) as err:
        load(config, env={})
    assert "journal.witnesses.0.key" in str(err.value) and "type 0x04" in str(err.value)


def test_config_refuses_a_quorum_above_the_witnesses(tmp_path: Path) -> None:
    w = cosigners(tmp_path, 1)[0]
    config = tmp_path / "k.yaml"
    config.write_text(
        f"journal:\n  witnesses:\n    - {{name: a, url: 'http://127.0.0.1:1', key: '{w.key.encode()}'}}\n"
        "  witness_quorum: 2\n"
    )
    with pytest.raises(ConfigError, match="witness_quorum 2 is more than the 1 witnesses"):
        load(config, env={})


def _keylife(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "keylife.cli", *args], capture_output=True, text=True, check=False)


def test_witness_pubkey_is_stable_and_the_key_is_owner_only(tmp_path: Path) -> None:
    first = _keylife("witness", "pubkey", "--data-dir", str(tmp_path / "w"), "--name", "w.test/one")
    again = _keylife("witness", "pubkey", "--data-dir", str(tmp_path / "w"))
    assert first.returncode == again.returncode == 0 and first.stdout == again.stdout
    assert first.stdout.startswith("w.test/one+")
    assert (tmp_path / "w" / "witness.key").stat().st_mode & 0o777 == 0o600
    assert "PRIVATE" not in first.stdout + first.stderr
    renamed = _keylife("witness", "pubkey", "--data-dir", str(tmp_path / "w"), "--name", "other")
    assert renamed.returncode == 2 and "key id depends on it" in renamed.stderr and "Traceback" not in renamed.stderr


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ([], "no logs to witness"),
        (["--log", "not-a-key"], "log 'not-a-key': verifier key must look like"),
        (["--log", "a b c"], "expected '[ORIGIN ]VERIFIERKEY'"),
    ],
)
def test_witness_serve_refuses_bad_arguments_in_one_line(tmp_path: Path, args: list[str], why: str) -> None:
    result = _keylife("witness", "serve", "--data-dir", str(tmp_path / "w"), "--port", "0", *args)
    assert result.returncode == 2 and why in result.stderr and "Traceback" not in result.stderr
