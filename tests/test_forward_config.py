"""The forwarder's config: the annotated example is valid, and mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from keylife.cli.config import ConfigError, load

EXAMPLE = Path(__file__).parents[1] / "deploy" / "forwarder.example.yaml"


def _with_real_files(node: object, tmp: Path) -> object:
    """The example's /etc paths, pointed at files that exist (the config checks they do)."""
    if isinstance(node, dict):
        return {
            k: (str(_touch(tmp, v)) if k.endswith("_file") and v else _with_real_files(v, tmp)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_with_real_files(v, tmp) for v in node]
    return node


def _touch(tmp: Path, original: str) -> Path:
    path = tmp / Path(original).name
    path.touch(mode=0o600)  # some are secrets (tokens, keys): keylife refuses those if others can read them
    path.write_text("x\n")
    return path


def test_the_forwarder_example_is_valid_and_has_every_sink_type(tmp_path):
    data = _with_real_files(yaml.safe_load(EXAMPLE.read_text()), tmp_path)
    config_file = tmp_path / "keylife.yaml"
    config_file.write_text(yaml.safe_dump(data))
    config = load(config_file, env={})
    types = {sink.type for sink in config.forwarder.sinks}
    assert types == {"loki", "syslog", "splunk_hec", "otlp_logs", "file"}
    assert config.forwarder.sinks[0].tenant == "security"


@pytest.mark.parametrize(
    ("sinks", "message"),
    [
        (
            [{"type": "loki", "name": "a", "url": "http://x:1"}, {"type": "file", "name": "a", "path": "/tmp/x"}],
            "unique",
        ),
        ([{"type": "carrier-pigeon", "name": "a"}], "does not match any of the expected tags"),
        ([{"type": "loki", "name": "Bad Name", "url": "http://x:1"}], "forwarder.sinks.0.loki.name"),
        ([{"type": "syslog", "name": "s", "host": "h", "port": 6514, "tls": {"cert_file": "/nope"}}], "key_file"),
    ],
)
def test_mistakes_are_named(tmp_path, sinks, message):
    config_file = tmp_path / "keylife.yaml"
    config_file.write_text(yaml.safe_dump({"forwarder": {"sinks": sinks}}))
    with pytest.raises(ConfigError, match=message):
        load(config_file, env={})
