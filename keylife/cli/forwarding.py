"""Wiring the forwarder into keylife: where quarantine notices are journaled, and how it starts.

In ``keylife serve`` the notices go straight to the ledger. ``keylife forward`` runs beside a
serving keylife (the journal has one writer), so it journals them through keylife's API
(``POST /v1/forwarder/quarantined``, ``forward`` scope: a producer's ``ingest`` token cannot forge
one); while that is unreachable the notices stay pending in the sink's quarantine state and
``keylife_forward_quarantine_unjournaled`` says so.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from audit_forwarder.shipper.service import Forwarder
from keylife.cli.config import Config
from keylife.common.datalock import DataDirBusy, DataLock
from keylife.domain.events import validate_notice
from keylife.ingest.ledger import Ledger

NOTICE_TIMEOUT = 10.0
log = logging.getLogger("keylife.forwarder")


class NoticeRefused(RuntimeError):
    """keylife would not journal a quarantine notice."""


class LedgerReporter:
    """In-process: the notice is durable once the ledger acknowledged it."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def report(self, notice: dict[str, Any]) -> None:
        (outcome,) = self.ledger.submit([validate_notice(notice)]).result(timeout=NOTICE_TIMEOUT)
        if outcome.status not in ("accepted", "duplicate"):
            raise NoticeRefused(
                f"the journal refused the notice {notice['id']}: {outcome.status} {outcome.error or ''}"
            )


class ApiReporter:
    """Another process: the notice goes through keylife's API, authenticated, TLS verified."""

    def __init__(self, base_url: str, token: str, verify: bool | ssl.SSLContext = True) -> None:
        self.url = base_url.rstrip("/") + "/v1/forwarder/quarantined"
        self.client = httpx.Client(timeout=NOTICE_TIMEOUT, verify=verify, headers={"Authorization": f"Bearer {token}"})

    def report(self, notice: dict[str, Any]) -> None:
        try:
            answer = self.client.post(self.url, json=notice)
        except httpx.HTTPError as exc:
            raise NoticeRefused(f"keylife at {self.url} is unreachable: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise NoticeRefused(f"keylife answered {answer.status_code} to a quarantine notice: {answer.text[:300]}")


def state_dir(config: Config) -> Path:
    return config.forwarder.state_dir or config.data_dir / "forwarder"


def lock_state_dir(config: Config, purpose: str) -> DataLock:
    """Take ``<state_dir>/forwarder.lock`` as ``keylife <purpose>``; ``DataDirBusy`` names the holder."""
    directory = state_dir(config)
    directory.mkdir(parents=True, exist_ok=True, mode=0o750)  # as Forwarder.start makes it
    return DataLock(directory, "forwarder.lock", "the forwarder state directory").acquire(purpose)


def build_forwarder(
    config: Config,
    registry: CollectorRegistry,
    reporter: Any,
    journal_size_fn: Callable[[], int] | None = None,
    *,
    purpose: str = "serve",
) -> Forwarder | None:
    """The forwarder over the configured sinks, holding its state directory's lock (released by
    ``Forwarder.stop``); None without an enabled sink.

    Another forwarder holding the state directory: ``keylife forward`` (``purpose="forward"``)
    gets ``DataDirBusy`` and exits 2; ``keylife serve`` logs the refusal and serves without a
    forwarder (ingest goes on; the other forwarder ships every entry, once).
    """
    if not any(sink.enabled for sink in config.forwarder.sinks):
        return None
    try:
        lock = lock_state_dir(config, purpose)
    except DataDirBusy as busy:
        if purpose != "serve":
            raise
        log.error(
            f"forwarder not started: {busy}, or remove forwarder.sinks from one of the two configs",
            extra={"state_dir": str(state_dir(config))},
        )
        return None
    try:
        return Forwarder(
            config.journal_dir,
            state_dir(config),
            list(config.forwarder.sinks),
            registry,
            reporter=reporter,
            journal_size_fn=journal_size_fn,
            lock=lock,
        )
    except BaseException:
        lock.release()
        raise
