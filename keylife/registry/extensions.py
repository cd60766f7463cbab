"""The registry's extensions, in the order they project (see ``keylife.registry.extension``)."""

from __future__ import annotations

from keylife.registry.anomalies import AnomaliesExtension
from keylife.registry.extension import Extension
from keylife.registry.incidents import IncidentsExtension
from keylife.registry.plans import PlansExtension
from keylife.registry.revocations import Revocations

EXTENSIONS: tuple[type[Extension], ...] = (
    Revocations,  # the revocation feed and per-node confirmation
    PlansExtension,  # bulk plans, lockdowns, approvals
    IncidentsExtension,  # incidents and their timelines
    AnomaliesExtension,  # usage baselines and anomaly flags
)
