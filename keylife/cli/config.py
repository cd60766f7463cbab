"""The full configuration: the core's sections plus the forwarder's sink types.

``keylife.config`` (a lower layer) keeps every section but cannot name the sink types, which belong
to ``audit_forwarder``; the composition root narrows ``forwarder.sinks`` to them here, so every
command validates the whole file at once and a bad sink setting is named by its path
(``forwarder.sinks.0.loki.url: ...``), as before.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from audit_forwarder.shipper.sink_types import SinkConfig
from keylife import config as core
from keylife.config import SCOPES, ConfigError, Token

__all__ = ["SCOPES", "Config", "ConfigError", "ForwarderConfig", "Token", "load"]


class ForwarderConfig(core.ForwarderConfig):
    __doc__ = core.ForwarderConfig.__doc__

    sinks: list[SinkConfig] = Field(default_factory=list)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _unique_names(self) -> ForwarderConfig:
        names = [sink.name for sink in self.sinks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"sink names must be unique; repeated: {', '.join(repeated)}")
        return self


class Config(core.Config):
    forwarder: ForwarderConfig = Field(default_factory=ForwarderConfig)  # type: ignore[assignment]


def load(path: Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Read ``path`` (optional), apply env overrides, validate; ConfigError names each bad setting."""
    return core.load_as(Config, path, env)
