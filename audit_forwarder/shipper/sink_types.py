"""Every sink type the config accepts: ``forwarder.sinks`` is a list discriminated by ``type``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from audit_forwarder.shipper.contract import Sink
from audit_forwarder.sinks import file

SinkConfig = Annotated[file.FileSinkConfig, Field(discriminator="type")]

_BUILDERS = {
    "file": file.build,
}


def build_sink(config: SinkConfig) -> Sink:
    return _BUILDERS[config.type](config)
