"""Wire the log side of tlog-witness into ``serve``: ``journal.witnesses`` -> a ``WitnessClient``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from keylife.cli.config import Config
from keylife.journal.cosignature import CosignerKey
from keylife.journal.note import Checkpoint
from keylife.journal.writer import Journal
from keylife.witness.client import WitnessClient, WitnessTarget
from keylife.witness.cosigned import CosignatureStore


def start_witnessing(config: Config, journal: Journal, registry: CollectorRegistry) -> WitnessClient | None:
    """A running client when witnesses are configured; none otherwise. Nothing is asked while the
    journal is read-only after an integrity fault: it signs nothing, so there is nothing to cosign."""
    j = config.journal
    if not j.witnesses:
        return None
    targets = [WitnessTarget(w.name, w.url, CosignerKey.parse(w.key)) for w in j.witnesses]

    def latest() -> Checkpoint | None:
        return None if journal.integrity_fault else journal.last_checkpoint

    def prove(old: int, new: int) -> list[bytes]:
        with journal.lock:  # the writer grows the tree under this lock (as the proof API reads it)
            return journal.tree.consistency(old, new)

    client = WitnessClient(
        CosignatureStore(journal.directory), targets, latest, prove, registry,
        quorum=j.witness_quorum or len(targets), interval=j.witness_interval_seconds,
        timeout=j.witness_timeout_seconds,
    )  # fmt: skip
    client.start()
    return client
