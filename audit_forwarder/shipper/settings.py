"""Settings every sink shares (batching, retries, where to start, TLS), validated by pydantic.

Each sink module defines its own ``<Name>SinkConfig(SinkSettings)`` with a ``type`` literal
and a ``build(config) -> Sink``; ``audit_forwarder.shipper.registry`` gathers them into the
``forwarder.sinks`` list of the YAML config.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from keylife.common.secret_files import check_secret_file

SINK_NAME = r"^[a-z][a-z0-9_-]{0,39}$"


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address: the only place a sink may speak plain text."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TlsClientSettings(BaseModel):
    """Client-side TLS. Verification is on; ``ca_file`` replaces the system trust store."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = None
    cert_file: Path | None = None  # client certificate, for mutual TLS
    key_file: Path | None = None
    server_name: str | None = None  # the name to verify, when it differs from the host

    @model_validator(mode="after")
    def _pair(self) -> TlsClientSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS): give both or neither")
        for path in (self.ca_file, self.cert_file, self.key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        if self.key_file is not None:
            check_secret_file(self.key_file, "TLS private key")  # the one rule for secret files
        return self

    def context(self) -> ssl.SSLContext:
        """A verifying client context (TLS 1.2+, hostname checked)."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


class SinkSettings(BaseModel):
    """What the shipper needs to drive any sink."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=SINK_NAME)  # the metric label and the state directory name
    enabled: bool = True
    start: Literal["beginning", "end"] = "beginning"  # where a sink with no cursor yet begins
    batch_max_records: int = Field(5000, ge=1, le=100_000)  # batch_max_bytes usually binds first
    batch_max_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    batch_wait_seconds: float = Field(0.05, ge=0, le=60)  # how long a partial batch waits to fill
    timeout_seconds: float = Field(10.0, gt=0, le=600)  # one request or acknowledgement
    retry_initial_seconds: float = Field(0.5, gt=0, le=60)
    retry_max_seconds: float = Field(60.0, gt=0, le=3600)
    publish_checkpoints: bool = True  # ship each signed checkpoint as its own record
    # A destination that refuses this many records in a row is taken as misconfigured (a wrong
    # URL, index or schema), not as refusing those records: the sink stops quarantining, reports
    # itself down and retries with backoff until an operator fixes it.
    max_consecutive_refusals: int = Field(100, ge=1)
