"""What the API needs from the process that serves it, and nothing more.

The composition root (``keylife.cli.runtime.Runtime``) builds these pieces and hands them to
``create_app``; the API never imports the runtime (``tests/test_layers.py``), so it cannot reach the
exporter, the forwarder or the DataFold sources.
"""

from __future__ import annotations

from typing import Protocol

from keylife.api.auth import RateLimiter, TokenStore
from keylife.config import Config
from keylife.ingest.ledger import Ledger
from keylife.ingest.telemetry import Telemetry
from keylife.journal.signing import Signer
from keylife.journal.writer import Journal
from keylife.registry.projection import Registry
from keylife.response.feed import Feed
from keylife.response.incidents import IncidentService
from keylife.response.reports.service import ReportService
from keylife.response.service import BulkService


class Services(Protocol):
    config: Config
    signer: Signer
    journal: Journal
    registry: Registry
    ledger: Ledger
    tokens: TokenStore
    auth_limiter: RateLimiter
    telemetry: Telemetry
    incidents: IncidentService | None
    revocations: Feed  # the signed revocation feed (keylife.response.feed)
    bulk: BulkService  # bulk plans, lockdowns, approvals (keylife.response)
    reports: ReportService  # compliance reports at a checkpoint signed for them (keylife.response.reports)
