"""One YAML config file, validated at start; every setting has a safe default.

Environment variables override the file: ``KEYLIFE_<SECTION>__<SETTING>`` (double underscore
between levels), e.g. ``KEYLIFE_LISTEN__PORT=9000``. Errors name the setting and the source.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from keylife.common.scopes import ROLES, SCOPES
from keylife.common.secret_files import check_secret_file


class ConfigError(ValueError):
    """The config cannot be used; the message lists every wrong setting."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Listen(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key, the API speaks HTTPS
    tls_key: Path | None = None
    # Slow and idle clients must not hold file descriptors (docs/configuration.md#listen).
    # None: 1000, lowered to leave room under the process's RLIMIT_NOFILE for the journal and registry.
    max_connections: int | None = Field(None, ge=1)
    idle_timeout_seconds: float = Field(5.0, gt=0, le=3600)  # a connection waiting for its next request
    header_timeout_seconds: float = Field(10.0, gt=0, le=3600)  # first byte to the end of the headers
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)  # end of the headers to the end of the body
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or networks); none by default.
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Listen:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        if self.tls_key is not None:
            check_secret_file(self.tls_key, "TLS private key")  # the one rule for secret files
        return self


class WitnessConfig(_Section):
    """A C2SP tlog-witness the log asks to cosign its checkpoints (docs/journal.md, *Witnesses*)."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\s]+$")  # label in logs and metrics
    url: str = Field(pattern=r"^https?://")  # the witness's submission prefix; add-checkpoint is appended
    key: str  # its cosignature/v1 verifier key: name+hexkeyid+base64(0x04 || Ed25519 key)

    @field_validator("key")
    @classmethod
    def _cosigner_key(cls, value: str) -> str:
        """Checked here without importing the journal (a peer layer); tlog-cosignature key id rule."""
        import base64
        import binascii
        import hashlib

        parts = value.strip().split("+", 2)
        if len(parts) != 3:
            raise ValueError("witness key must look like name+hexkeyid+base64key")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise ValueError("witness key: the key part is not valid base64") from None
        if len(raw) != 33 or raw[0] != 4:
            raise ValueError("witness key: only cosignature/v1 Ed25519 keys (type 0x04, 32 bytes) are supported")
        if hashlib.sha256(parts[0].encode() + b"\n" + raw).digest()[:4].hex() != parts[1].lower():
            raise ValueError("witness key: key id does not match the name and key")
        return value.strip()


class JournalConfig(_Section):
    origin: str = Field(default_factory=lambda: f"keylife/{socket.gethostname()}", min_length=1, max_length=200)
    dir: Path | None = None
    signing_key: Path | None = None
    segment_max_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    segment_max_age_seconds: float = Field(86400.0, gt=0)
    checkpoint_every: int = Field(1000, ge=1)
    checkpoint_interval_seconds: float = Field(1.0, gt=0, le=3600)
    compress_level: int = Field(3, ge=1, le=22)
    verify_interval_seconds: float = Field(3600.0, gt=0)  # serve re-verifies the whole journal this often
    retention_days: int | None = Field(None, ge=1)  # `keylife journal prune` without --before: older than this
    witnesses: list[WitnessConfig] = Field(default_factory=list)  # asked to cosign each new checkpoint
    witness_quorum: int | None = Field(None, ge=1)  # cosignatures a checkpoint needs to count; None: all
    witness_interval_seconds: float = Field(10.0, gt=0, le=3600)  # at most one round of requests this often
    witness_timeout_seconds: float = Field(10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _witness_quorum(self) -> JournalConfig:
        names = [w.name for w in self.witnesses]
        if len(set(names)) != len(names):
            raise ValueError("witness names must be unique")
        if self.witness_quorum is not None and self.witness_quorum > len(self.witnesses):
            raise ValueError(f"witness_quorum {self.witness_quorum} is more than the {len(self.witnesses)} witnesses")
        return self

    @field_validator("origin")
    @classmethod
    def _origin_line(cls, value: str) -> str:
        if "\n" in value or value != value.strip():
            raise ValueError("origin must be one line without surrounding spaces")
        return value


class RegistryConfig(_Section):
    path: Path | None = None
    # Usage anomaly detection (docs/anomalies.md): per-key baselines learnt from usage reports, and
    # the anomaly records they raise. Off: nothing is learnt or flagged. Turned on again, it first
    # replays the journal since its baselines were last written (a registry that never had them
    # starts learning then).
    anomalies: bool = True

    def disabled_extensions(self) -> frozenset[str]:
        """The registry extensions this configuration turns off (``Registry(disabled=...)``)."""
        return frozenset() if self.anomalies else frozenset({"anomalies"})


# Literal[("a", "b")] is Literal["a", "b"]: the names are written once, in keylife.common.scopes.
Scope = Literal[SCOPES]  # type: ignore[valid-type]
Role = Literal[tuple(ROLES)]  # type: ignore[valid-type]


class Token(_Section):
    """One API token: its name is the identity journaled as ``actor`` (dual control needs two
    different names), and it may do what its role and its scopes grant (keylife.common.scopes)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: Role | None = None
    scopes: list[Scope] = Field(default_factory=list)

    @model_validator(mode="after")
    def _grants_something(self) -> Token:
        if self.role is None and not self.scopes:
            raise ValueError(f"token {self.name!r} needs a role ({', '.join(ROLES)}) or scopes")
        return self


class ApiConfig(_Section):
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_lines: int = Field(10_000, ge=1)
    tokens: list[Token] = Field(default_factory=list)
    token_file: Path | None = None
    auth_failures_journaled_per_second: float = Field(1.0, gt=0)
    auth_failures_burst: int = Field(20, ge=1)


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class OtlpConfig(_Section):
    endpoint: str = Field(min_length=1)  # gRPC host:port or URL; http/protobuf: URL
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    interval_seconds: float = Field(15.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    insecure: bool = False  # plain text (never "skip verification"); only for a collector on loopback


class MetricsListen(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8788, ge=0, le=65535)


class ExporterConfig(_Section):
    otlp: OtlpConfig | None = None  # push the same metrics over OTLP when set
    policy: Path | None = None  # YAML policy file; the built-in defaults (docs/policy.md) otherwise
    attention_cap: int = Field(500, ge=0, le=100_000)  # per-key series at most; the rest are counted
    # Keys expiring within this many days need attention (reason "expiring"): their per-key series,
    # keylife_key_expiry_timestamp_seconds among them, exist only within it (docs/metrics.md).
    expiry_horizon_days: int = Field(30, ge=1, le=3650)
    # A rendered /metrics body younger than this is served again; concurrent scrapes share one render.
    scrape_cache_seconds: float = Field(1.0, ge=0, le=300)
    # A separate plain-HTTP listener for /metrics (and /healthz); /metrics then leaves the API listener.
    metrics_listen: MetricsListen | None = None


class DemoSettings(_Section):
    enabled: bool = False
    nodes: int = Field(5, ge=1, le=1000)
    keys: int = Field(40, ge=1, le=1_000_000)
    seed: int = 1


class ForwarderConfig(_Section):
    """Where the journal is shipped: several sinks at once, each with its own cursor.

    The core does not know the sink types (they belong to ``audit_forwarder``): here each sink is a
    mapping, and the composition root validates it (``keylife.cli.config``), so a bad sink setting is
    still named by its path (``forwarder.sinks.0.loki.url``).
    """

    sinks: list[dict[str, Any]] = Field(default_factory=list)
    state_dir: Path | None = None  # cursors and quarantine files; data_dir/forwarder by default
    # ``keylife forward`` only: where it journals quarantine notices (the serving keylife's API)
    # and where it serves its own metrics.
    report_url: str | None = None  # default: the listen address of this config
    report_token_file: Path | None = None  # default: the local admin token file
    report_ca_file: Path | None = None  # verify keylife's HTTPS certificate with this CA
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(8789, ge=0, le=65535)


_NODE = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$"  # the event model's node name (keylife.events.Name)


class DataFoldFile(_Section):
    path: Path  # a node's log file (env_logger lines), followed across rotation and truncation
    node: str | None = Field(None, max_length=128, pattern=_NODE)  # for lines that do not name their node


class _DataFoldClient(_Section):
    """How keylife talks to a node's ``/api`` (docs/datafold.md, "Talking to a node: signed requests")."""

    # RFC 9421 signatures: auto = after the node's first 400 MISSING_HEADERS (security, security2).
    sign: Literal["auto", "always", "never"] = "auto"
    client_id: str = Field("keylife", max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")  # the keyid


class DataFoldSse(_DataFoldClient):
    url: str = Field(min_length=1, pattern=r"^https?://")  # a node's GET /api/logs/stream
    node: str | None = Field(None, max_length=128, pattern=_NODE)


class DataFoldPoll(_DataFoldClient):
    url: str = Field(min_length=1, pattern=r"^https?://")  # the node's base URL
    node: str | None = Field(None, max_length=128, pattern=_NODE)
    clients: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(default_factory=list)  # whose key status
    system_key: bool = False  # mainline: GET /api/security/system-key (its one key; no per-client keys)
    rotations: bool = False  # security: POST /api/crypto/keys/rotate/history per client key (names both keys)
    interval_seconds: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _asks_something(self) -> DataFoldPoll:
        if not self.clients and not self.system_key:
            raise ValueError("a poll source needs clients (security, security2) or system_key: true (mainline)")
        return self


class DataFoldConfig(_Section):
    """DataFold nodes whose key events ``keylife serve`` reads itself (the DataFold adapter)."""

    files: list[DataFoldFile] = Field(default_factory=list)
    sse: list[DataFoldSse] = Field(default_factory=list)
    poll: list[DataFoldPoll] = Field(default_factory=list)
    state_dir: Path | None = None  # read positions; data_dir/datafold by default
    usage_interval_seconds: float = Field(60.0, gt=0)  # usage is reported per key per this interval

    @model_validator(mode="after")
    def _each_source_once(self) -> DataFoldConfig:
        """Two readers of one source would race on its saved position."""
        names = [str(f.path) for f in self.files] + [s.url for s in self.sse] + [p.url for p in self.poll]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"each source may be listed once; repeated: {', '.join(repeated)}")
        return self


class RevocationsConfig(_Section):
    """The signed revocation feed (GET /v1/revocations) and per-node confirmation."""


class AutoLockdownRule(_Section):
    """When a key is marked ``when``, lock down the keys ``scope`` names around it."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    when: Literal["compromised"] = "compromised"
    scope: Literal["same_owner_same_node", "same_owner", "same_node"] = "same_owner_same_node"


class BulkConfig(_Section):
    """Bulk plans (POST /v1/keys/bulk), lockdowns and dual control."""

    dual_control_min_keys: int = Field(1000, ge=1)  # a plan of this many keys or more needs a second approver
    approval_ttl_seconds: float = Field(3600.0, gt=0)  # an approval not granted by then expires
    batch_size: int = Field(5000, ge=1, le=20_000)  # commands per ledger submit while a plan executes
    auto_lockdown: list[AutoLockdownRule] = Field(default_factory=list)  # off (empty) by default


class IncidentsConfig(_Section):
    """Incidents: opened on compromise and by Alertmanager's webhook."""

    open_on_compromise: bool = True  # a journaled compromise opens a critical incident (or links to its own)
    # Alertmanager alerts (alertname) that open or update an incident at POST /v1/alertmanager/webhook.
    alert_kinds: list[str] = Field(
        default_factory=lambda: [
            "KeylifeKeyCompromised",
            "KeylifeKeyUsedAfterRevocation",
            "KeylifeRevocationUnconfirmed",
        ]
    )


class ReportSchedule(_Section):
    """One scheduled compliance report (docs/reporting.md, *Scheduled reports*)."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    every: Literal["daily", "weekly", "monthly"]  # the period just completed: a UTC day, ISO week, month
    formats: list[Literal["json", "csv", "html"]] = Field(default_factory=lambda: ["json", "html"], min_length=1)
    selector: dict[str, Any] | None = None  # the bulk selector's fields (owner, purpose, states, ...); None: all


class ReportsConfig(_Section):
    """Scheduled compliance reports, written to ``directory`` and announced as journaled ``report`` records."""

    directory: Path | None = None  # default: <data_dir>/reports
    retention: int = Field(default=30, ge=1, le=10_000)  # reports kept per schedule, newest first
    check_interval_seconds: float = Field(default=60.0, gt=0, le=3600)  # how often a due report is looked for
    schedules: list[ReportSchedule] = []


class Config(_Section):
    data_dir: Path = Path("data")
    listen: Listen = Field(default_factory=Listen)
    journal: JournalConfig = Field(default_factory=JournalConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    demo: DemoSettings = Field(default_factory=DemoSettings)
    exporter: ExporterConfig = Field(default_factory=ExporterConfig)
    forwarder: ForwarderConfig = Field(default_factory=ForwarderConfig)
    datafold: DataFoldConfig = Field(default_factory=DataFoldConfig)
    revocations: RevocationsConfig = Field(default_factory=RevocationsConfig)
    bulk: BulkConfig = Field(default_factory=BulkConfig)
    incidents: IncidentsConfig = Field(default_factory=IncidentsConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)

    @property
    def journal_dir(self) -> Path:
        return self.journal.dir or self.data_dir / "journal"

    @property
    def signing_key_path(self) -> Path:
        return self.journal.signing_key or self.data_dir / "keys" / "journal-signing.key"

    @property
    def registry_path(self) -> Path:
        return self.registry.path or self.data_dir / "registry.sqlite"

    @property
    def token_file(self) -> Path:
        return self.api.token_file or self.data_dir / "tokens" / "admin.token"

    @property
    def datafold_state_dir(self) -> Path:
        return self.datafold.state_dir or self.data_dir / "datafold"


C = TypeVar("C", bound=Config)


def _env_overrides(env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith("KEYLIFE_") or name in ("KEYLIFE_CONFIG",):
            continue
        path = name[len("KEYLIFE_") :].lower().split("__")
        if len(path) == 1 and path[0] not in Config.model_fields:
            continue  # not a setting (KEYLIFE_TOKEN is the CLI's token); KEYLIFE_TYPO__X still fails loudly
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(value) if value else value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_as(model: type[C], path: Path | None = None, env: dict[str, str] | None = None) -> C:
    """Read ``path`` (optional), apply env overrides, validate as ``model``; ConfigError names each bad setting.

    The full configuration (with the forwarder's sink types) is ``keylife.cli.config.Config``, and
    ``keylife.cli.config.load`` is how every command reads it.
    """
    env = dict(os.environ) if env is None else env
    source = str(path) if path else "defaults"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
        # A section left with only comments in it reads as null: treat it as "all defaults".
        raw = {key: ({} if value is None else value) for key, value in (loaded or {}).items()}
    raw = _merge(raw, _env_overrides(env))
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            setting = ".".join(str(part) for part in err["loc"])
            problems.append(f"  {setting}: {err['msg']}")
        raise ConfigError(f"{source} (with KEYLIFE_* overrides): invalid settings:\n" + "\n".join(problems)) from None
