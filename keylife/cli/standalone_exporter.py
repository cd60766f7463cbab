"""``keylife exporter``: the metrics of an existing registry and journal, from another process.

For deployments that split ingest from exporting. It reloads the fleet index from the
registry's committed tables in the background, at most every ``refresh`` seconds and never
more than half the time (a reload at a million keys takes tens of seconds). The old index is
released before the new one is built, so memory holds one index, and scrapes meanwhile get
the last snapshot (``keylife_fleet_snapshot_timestamp_seconds`` shows its age). What only
the ingest process can know (the propagation-lag histogram, whether its writer is up) is
not served here.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from exporter.collectors import FleetCollector, PipelineCollector
from exporter.fleet import ATTENTION_HORIZON, UNOWNED, FleetIndex
from exporter.policy import Policy
from exporter.posture import PostureFamilies
from exporter.snapshot import SingleFlight, Snapshot
from keylife.common.process import tune_gc
from keylife.ingest.telemetry import add_standard_collectors
from keylife.journal import verify_status
from keylife.journal.note import parse
from keylife.journal.reader import journal_size
from keylife.registry.queries import open_readonly

log = logging.getLogger("keylife.exporter")


class StandaloneExporter:
    def __init__(
        self,
        registry_path: Path,
        journal_dir: Path,
        policy: Policy,
        attention_cap: int,
        expiry_horizon: float = ATTENTION_HORIZON,
    ) -> None:
        self.registry_path, self.journal_dir, self.policy = registry_path, journal_dir, policy
        self.metrics = add_standard_collectors(CollectorRegistry())  # process_*, python_info
        self.index: FleetIndex | None = self._load()
        self._last: Snapshot | None = None
        self.attention_cap, self.expiry_horizon = attention_cap, expiry_horizon
        self.snapshots = SingleFlight(self._snapshot)
        # No forwarder runs here (``keylife forward`` holds its own state directory): forwarders_current
        # is not measured, and the score is the weighted mean of the other components (docs/posture.md).
        posture = PostureFamilies(registry_path, self.pipeline, None, attention_cap, self._owner_of)
        self.metrics.register(FleetCollector(self.snapshots, [posture]))
        self.metrics.register(PipelineCollector(self.pipeline))
        self._stop = threading.Event()

    def _snapshot(self) -> Snapshot:
        index = self.index
        if index is None and self._last is not None:
            return self._last  # reloading: the previous picture, with its own timestamp
        if index is None:
            raise RuntimeError("the fleet index is loading")
        self._last = index.snapshot(time.time(), self.attention_cap, self.expiry_horizon)
        return self._last

    def _owner_of(self, key_id: str) -> str:
        index = self.index  # None while reloading: the owner is then unknown for this scrape
        return index.owner_of(key_id) if index is not None else UNOWNED

    def _load(self) -> FleetIndex:
        return FleetIndex.from_registry(self.policy, self.registry_path)

    def pipeline(self) -> dict[str, float]:
        size = journal_size(self.journal_dir)
        values = {"keylife_journal_entries": float(size)}
        latest = self.journal_dir / "checkpoint"
        try:
            checkpoint = parse(latest.read_text())
            values["keylife_journal_checkpoint_entries"] = float(checkpoint.size)
            values["keylife_journal_last_checkpoint_timestamp_seconds"] = latest.stat().st_mtime
        except (OSError, ValueError):
            pass
        try:
            with closing(open_readonly(self.registry_path)) as db:
                row = db.execute("SELECT value FROM meta WHERE name = 'last_applied_seq'").fetchone()
            values["keylife_registry_lag_entries"] = float(max(0, size - 1 - int(row[0])))
        except (sqlite3.Error, TypeError, ValueError):
            pass
        return values | verify_status.read(self.journal_dir)

    def refresh_forever(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                started = time.monotonic()
                self.index = self._load()
                log.info("fleet index reloaded", extra={"seconds": round(time.monotonic() - started, 3)})
            except Exception:
                log.exception("fleet index reload failed; serving the previous one")

    def serve(self, host: str, port: int, refresh: float) -> int:
        tune_gc()
        server, _thread = start_http_server(port, addr=host, registry=self.metrics)
        bound = server.server_address[1]
        print(f"keylife exporter serving http://{host}:{bound}/metrics (registry {self.registry_path})", flush=True)
        try:
            self.refresh_forever(refresh)
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
        return 0

    def stop(self) -> None:
        self._stop.set()
