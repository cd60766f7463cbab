"""Config: safe defaults, env overrides, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from keylife.cli.config import ConfigError, load


def test_defaults_are_safe_without_a_file() -> None:
    config = load(None, env={})
    assert config.listen.host == "127.0.0.1"  # loopback unless told otherwise
    assert config.api.tokens == [] and config.token_file == Path("data/tokens/admin.token")
    assert config.journal.checkpoint_interval_seconds == 1.0


def test_env_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    path.write_text("listen:\n  port: 9000\njournal:\n  checkpoint_every: 50\n")
    config = load(path, env={"KEYLIFE_LISTEN__PORT": "9100", "KEYLIFE_DATA_DIR": "/srv/keylife"})
    assert config.listen.port == 9100 and config.journal.checkpoint_every == 50
    assert config.journal_dir == Path("/srv/keylife/journal")


def test_errors_name_every_bad_setting(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    path.write_text("listen:\n  port: 70000\njournal:\n  checkpoint_every: 0\napi:\n  tokns: []\n")
    with pytest.raises(ConfigError) as err:
        load(path, env={})
    text = str(err.value)
    assert str(path) in text
    assert "listen.port:" in text and "journal.checkpoint_every:" in text and "api.tokns: Extra inputs" in text


def test_unreadable_and_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad, env={})
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load(bad, env={})


def test_the_annotated_example_is_valid() -> None:
    example = Path(__file__).parents[1] / "deploy/keylife.example.yaml"
    config = load(example, env={})
    assert config.journal.origin == "keylife.example.com/journal"
    assert [t.name for t in config.api.tokens] == ["datafold-nodes", "grafana"]


def test_keylife_variables_that_are_not_settings_are_left_alone() -> None:
    config = load(None, env={"KEYLIFE_TOKEN": "kl_secret", "KEYLIFE_LISTEN__PORT": "9001"})
    assert config.listen.port == 9001


def test_a_misspelt_section_in_an_override_is_still_an_error() -> None:
    with pytest.raises(ConfigError, match="listn"):
        load(None, env={"KEYLIFE_LISTN__PORT": "9001"})
