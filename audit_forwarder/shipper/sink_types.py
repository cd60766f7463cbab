"""Every sink type the config accepts: ``forwarder.sinks`` is a list discriminated by ``type``."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from audit_forwarder.shipper.contract import Sink
from audit_forwarder.sinks import file

# Union[...] rather than X | Y: a discriminated union needs at least two members to be a Union.
SinkConfig = Annotated[Union[file.FileSinkConfig, file.FileSinkConfig], Field(discriminator="type")]  # noqa: UP007

_BUILDERS = {
    "file": file.build,
}


def build_sink(config: SinkConfig) -> Sink:
    return _BUILDERS[config.type](config)
