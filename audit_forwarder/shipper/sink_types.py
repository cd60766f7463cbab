"""Every sink type the config accepts: ``forwarder.sinks`` is a list discriminated by ``type``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from audit_forwarder.shipper.contract import Sink
from audit_forwarder.sinks import file, loki, otlp_logs, splunk_hec, syslog

SinkConfig = Annotated[
    file.FileSinkConfig
    | loki.LokiSinkConfig
    | syslog.SyslogSinkConfig
    | splunk_hec.SplunkHecSinkConfig
    | otlp_logs.OtlpLogsSinkConfig,
    Field(discriminator="type"),
]

_BUILDERS = {
    "file": file.build,
    "loki": loki.build,
    "syslog": syslog.build,
    "splunk_hec": splunk_hec.build,
    "otlp_logs": otlp_logs.build,
}


def build_sink(config: SinkConfig) -> Sink:
    return _BUILDERS[config.type](config)
