"""Assemble a running keylife from a Config: signing key, journal, registry, ledger, tokens."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from audit_forwarder.shipper.service import Forwarder
from exporter.otlp import OtlpMetricsPusher, OtlpSettings
from exporter.policy import load_policy
from exporter.posture import SinkStatus
from exporter.service import Exporter
from keylife.api.auth import RateLimiter, TokenStore, hash_token, new_token
from keylife.cli.bulk_metrics import LockdownCollector
from keylife.cli.config import SCOPES, Config, Token
from keylife.cli.datafold_metrics import DataFoldCollector
from keylife.cli.forwarding import LedgerReporter, build_forwarder
from keylife.cli.report_metrics import ReportCollector
from keylife.cli.report_rules import PolicyRules
from keylife.cli.witnessing import start_witnessing
from keylife.cli.writer_metrics import WriterCollector
from keylife.common.datalock import DataLock
from keylife.common.secret_files import create_secret_file, read_secret_text
from keylife.datafold.service import DataFoldService, start_datafold
from keylife.ingest.ledger import Ledger
from keylife.ingest.telemetry import Telemetry
from keylife.journal import verify_status
from keylife.journal.key_rotation import RotationRefused
from keylife.journal.key_rotation import finish as finish_rotation
from keylife.journal.reader import iter_entries, pruned_upto
from keylife.journal.signing import Signer
from keylife.journal.verify_status import PeriodicVerify
from keylife.journal.writer import Entry, Journal, JournalCorrupt, JournalSettings
from keylife.registry.projection import Registry, RegistryError, RegistrySchemaOld, rebuild
from keylife.response.anomalies import AnomalyService
from keylife.response.feed import Feed
from keylife.response.incidents import IncidentService
from keylife.response.reports.schedule import ReportScheduler
from keylife.response.reports.service import ReportService
from keylife.response.service import BulkService
from keylife.witness.client import WitnessClient

log = logging.getLogger("keylife.runtime")


def journal_settings(config: Config) -> JournalSettings:
    j = config.journal
    return JournalSettings(
        origin=j.origin,
        segment_max_bytes=j.segment_max_bytes,
        segment_max_age=j.segment_max_age_seconds,
        checkpoint_every=j.checkpoint_every,
        checkpoint_interval=j.checkpoint_interval_seconds,
        compress_level=j.compress_level,
    )


def ensure_token_file(path: Path) -> tuple[str, bool]:
    """Read the local admin token, creating it (0600) on first start. Returns (token, created)."""
    if path.exists():
        return read_secret_text(path, "token file"), False
    token = new_token()
    create_secret_file(path, (token + "\n").encode())
    return token, True


@dataclass
class Runtime:
    config: Config
    signer: Signer
    journal: Journal
    registry: Registry
    ledger: Ledger
    tokens: TokenStore
    auth_limiter: RateLimiter
    telemetry: Telemetry
    lock: DataLock
    exporter: Exporter
    verifier: PeriodicVerify
    pusher: OtlpMetricsPusher | None
    forwarder: Forwarder | None = None
    datafold: DataFoldService | None = None
    local_token: str | None = None
    notes: list[str] = field(default_factory=list)
    witnessing: WitnessClient | None = None
    incidents: IncidentService | None = None
    revocations: Feed = field(init=False)
    bulk: BulkService = None  # type: ignore[assignment]  # set by _start
    anomalies: AnomalyService | None = None
    reports: ReportService = None  # type: ignore[assignment]  # set by _start
    report_scheduler: ReportScheduler | None = None

    @classmethod
    def start(cls, config: Config) -> Runtime:
        lock = DataLock(config.data_dir).acquire("serve")
        try:
            return cls._start(config, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _start(cls, config: Config, lock: DataLock) -> Runtime:
        notes: list[str] = []
        signer, created = Signer.load_or_create(config.signing_key_path, config.journal.origin)
        if created:
            notes.append(f"created journal signing key {config.signing_key_path} (0600)")
        tokens = list(config.api.tokens)  # before any thread starts: a refused token file stops nothing
        local_token = None
        if not tokens:
            local_token, made = ensure_token_file(config.token_file)
            tokens = [Token(name="local-admin", sha256=hash_token(local_token), scopes=list(SCOPES))]
            if made:
                notes.append(f"created a local admin token in {config.token_file} (0600)")
        journal = Journal(config.journal_dir, signer, journal_settings(config))
        try:  # before anything is appended or signed: a rotation a crash interrupted
            finished = finish_rotation(journal, config.signing_key_path)
        except (RotationRefused, JournalCorrupt, OSError, ValueError) as exc:
            journal.mark_faulty(f"signing-key rotation: {exc}")
        else:
            notes += [finished] if finished else []
        signer = journal.signer
        if journal.integrity_fault is None:  # a swapped verifier.key is evidence too: left as found
            _write_public(config.journal_dir / "verifier.key", signer.verifier.encode())
        registry = _open_registry(config, notes)
        telemetry = Telemetry()
        wake: list[Forwarder] = []  # filled once the forwarder exists; the writer wakes it per commit
        # Called on the writer thread with each committed group: a reaction must only hand the
        # entries to a thread of its own (submitting and waiting here would deadlock the writer).
        reactions: list[Callable[[list[Entry]], None]] = []

        def on_commit(entries: list[Entry]) -> None:
            telemetry.observe_entries(entries)
            for forwarder in wake:
                forwarder.notify()
            for react in reactions:
                try:
                    react(entries)
                except Exception:  # a reaction's failure must not fail the writer
                    log.exception("a commit reaction failed")

        ledger = Ledger(journal, registry, on_commit=on_commit)
        bulk = BulkService(config.bulk, ledger, registry, config.data_dir)
        reactions.append(bulk.react)  # automatic lockdown: hands compromised keys to its own thread
        exporter = Exporter.over(
            config.registry_path,
            load_policy(config.exporter.policy),
            telemetry.registry,
            lambda: pipeline_values(journal, registry, ledger),
            attention_cap=config.exporter.attention_cap,
            expiry_horizon=config.exporter.expiry_horizon_days * 86400,
            sinks=lambda: sink_statuses(wake, journal.committed_size),  # the posture's forwarders_current
        )
        registry.listeners.append(exporter.index.apply)  # before catch-up, so the index sees it too
        telemetry.registry.register(WriterCollector(journal, ledger))
        ledger.start()
        incidents = IncidentService(config.incidents, ledger, registry)
        incidents.start(journal)  # catches up on a compromise a stop left without its incident
        reactions.append(incidents.react)  # a compromise opens an incident (its own thread)
        anomalies = AnomalyService(ledger, registry)
        registry.listeners.append(anomalies.on_delta)  # flags staged by the registry -> anomaly records
        anomalies.start()  # first the flags a stop left unjournaled
        verifier = PeriodicVerify(
            config.journal_dir,
            [signer.verifier],
            config.journal.verify_interval_seconds,
            held=lambda: journal.last_checkpoint,
            standing=lambda: journal.integrity_fault,
            on_fault=ledger.fail_integrity,
        )
        verifier.start()
        forwarder = build_forwarder(
            config, telemetry.registry, LedgerReporter(ledger), journal_size_fn=lambda: journal.committed_size
        )
        if forwarder is not None:
            wake.append(forwarder)
            forwarder.start()
        datafold = start_datafold(config, ledger)  # idle unless datafold sources are configured
        telemetry.registry.register(DataFoldCollector(datafold))
        telemetry.registry.register(LockdownCollector(registry, [r.name for r in config.bulk.auto_lockdown]))
        pusher = _otlp(config, telemetry)
        limiter = RateLimiter(config.api.auth_failures_journaled_per_second, config.api.auth_failures_burst)
        witnessing = start_witnessing(config, journal, telemetry.registry)  # off the ack path: its own thread
        resumed = bulk.start()  # plans a previous process left started resume here
        notes += [f"resumed bulk plan {plan}" for plan in resumed]
        runtime = cls(
            config, signer, journal, registry, ledger, TokenStore(tokens), limiter, telemetry, lock, exporter,
            verifier, pusher, forwarder, datafold, local_token, notes, witnessing, incidents, bulk,
        )  # fmt: skip
        runtime.revocations = Feed(registry, config.journal.origin)
        runtime.anomalies = anomalies
        runtime.reports = ReportService(ledger, journal, config.registry_path, PolicyRules(exporter.index.policy))
        directory = config.reports.directory or config.data_dir / "reports"
        runtime.report_scheduler = ReportScheduler(config.reports, directory, runtime.reports, ledger)
        telemetry.registry.register(ReportCollector(runtime.report_scheduler, config.reports))
        runtime.report_scheduler.start()  # idle unless reports.schedules are configured
        return runtime

    def close(self) -> None:
        if self.pusher is not None:
            self.pusher.shutdown()
        self.verifier.stop()
        if self.witnessing is not None:
            self.witnessing.stop()
        if self.datafold is not None:
            self.datafold.stop()  # before the ledger: its sources submit through it
        if self.forwarder is not None:
            self.forwarder.stop()  # before the ledger: it journals quarantine notices through it
        if self.report_scheduler is not None:
            self.report_scheduler.stop()  # before the ledger: a run journals its record through it
        if self.bulk is not None:
            self.bulk.stop()  # before the ledger: running plans submit through it (they resume at start)
        if self.incidents is not None:
            self.incidents.stop()  # before the ledger: it journals through it
        if self.anomalies is not None:
            self.anomalies.stop()  # before the ledger: it journals through it
        self.ledger.stop()
        self.registry.close()
        self.lock.release()


def _open_registry(config: Config, notes: list[str]) -> Registry:
    """The registry; one an older keylife wrote is rebuilt from the journal first (it is a
    projection, so nothing is lost), unless the journal was pruned (then the operator decides)."""
    off = config.registry.disabled_extensions()
    try:
        return Registry(config.registry_path, origin=config.journal.origin, disabled=off)
    except RegistrySchemaOld as exc:
        if pruned_upto(config.journal_dir):
            raise RegistryError(f"{exc}; the journal was pruned, so it cannot be rebuilt here") from None
        log.warning("registry schema is older than this keylife; rebuilding it from the journal")
        stats = rebuild(
            iter_entries(config.journal_dir), config.registry_path, origin=config.journal.origin, disabled=off
        )
        notes.append(f"rebuilt the registry from the journal for the new schema ({stats.entries} entries)")
        return Registry(config.registry_path, origin=config.journal.origin, disabled=off)


def _otlp(config: Config, telemetry: Telemetry) -> OtlpMetricsPusher | None:
    otlp = config.exporter.otlp
    if otlp is None:
        return None
    settings = OtlpSettings(
        endpoint=otlp.endpoint,
        protocol=otlp.protocol,
        interval_seconds=otlp.interval_seconds,
        headers=dict(otlp.headers),
        insecure=otlp.insecure,
    )
    pusher = OtlpMetricsPusher(telemetry.registry, settings, {"keylife.journal.origin": config.journal.origin})
    pusher.start()
    return pusher


def pipeline_values(journal: Journal, registry: Registry, ledger: Ledger) -> dict[str, float]:
    """Positions read at scrape time (plain attribute reads; the registry's committed view)."""
    checkpoint = journal.last_checkpoint
    values = {
        "keylife_journal_entries": float(journal.size),
        "keylife_journal_checkpoint_entries": float(checkpoint.size if checkpoint else 0),
        "keylife_registry_lag_entries": float(max(0, journal.size - 1 - registry.last_applied_seq())),
        "keylife_ingest_writer_up": 1.0 if ledger.running else 0.0,
        "keylife_journal_segments_unsealed": float(journal.unsealed),
        "keylife_journal_integrity_ok": 0.0 if journal.integrity_fault else 1.0,
    }
    if checkpoint is not None:
        values["keylife_journal_last_checkpoint_timestamp_seconds"] = journal.last_checkpoint_time
    return values | verify_status.read(journal.directory)


def sink_statuses(forwarders: list[Forwarder], size: int) -> list[SinkStatus]:
    """Each forwarder sink as the posture score sees it: up, and how old its oldest unshipped entry is."""
    now, out = time.time(), []
    for worker in (w for f in forwarders for w in f.workers):
        oldest = worker.oldest_unshipped_observed() if size > worker.acknowledged else None
        out.append(SinkStatus(worker.up, 0.0 if oldest is None else max(0.0, now - oldest)))
    return out


def _write_public(path: Path, text: str) -> None:
    """The verifier key is public; keep a copy beside the journal for auditors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text().strip() != text:
        path.write_text(text + "\n")
