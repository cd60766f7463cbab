"""Alertmanager's webhook (payload version 4) into incidents.

The body is Alertmanager's ``<webhook_config>`` JSON (prometheus.io/docs/alerting/latest/configuration,
"webhook_config"): ``version`` "4", ``groupKey``, ``truncatedAlerts``, ``status``, ``receiver``,
``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL`` and ``alerts``, each with
``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``.

A firing alert whose ``alertname`` is one of ``incidents.alert_kinds`` opens an incident, or adds
an ``alert`` record to the incident already open for the same alert (its fingerprint); a resolved
one adds an ``alert`` record. Alertmanager repeats notifications (group changes, repeat_interval,
retries), so every record's id and content derive from the alert alone (fingerprint, startsAt,
status): a redelivery is a journal duplicate, never a second incident or a second entry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from keylife.domain.events import format_time
from keylife.registry import incidents as q
from keylife.response.incidents import MAX_NODES, IncidentService, _hash, derived_incident_id

Short = Annotated[str, StringConstraints(max_length=4096)]
Labels = Annotated[dict[Annotated[str, StringConstraints(max_length=256)], Short], Field(max_length=128)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # new fields of a later Alertmanager: ignored


class AlertPayload(_Strict):
    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels
    startsAt: AwareDatetime
    endsAt: AwareDatetime | None = None
    generatorURL: Short
    fingerprint: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9a-fA-F]+$")]


class WebhookPayload(_Strict):
    version: Literal["4"]
    groupKey: Short
    truncatedAlerts: Annotated[int, Field(ge=0)] = 0
    status: Literal["firing", "resolved"]
    receiver: Short
    groupLabels: Labels
    commonLabels: Labels
    commonAnnotations: Labels
    externalURL: Short
    alerts: Annotated[list[AlertPayload], Field(max_length=1000)]


SEVERITY = {"critical": "critical", "page": "critical", "warning": "high", "info": "low"}


def _time(value: datetime) -> str:
    return format_time(value.astimezone(UTC))


def handle(service: IncidentService, payload: WebhookPayload, actor: str) -> list[dict[str, Any]]:
    """What each alert of the notification did: opened, updated, duplicate, resolved, or ignored (why)."""
    kinds = set(service.config.alert_kinds)
    results = []
    service.sync()
    for alert in payload.alerts:
        name = alert.labels.get("alertname", "")
        result: dict[str, Any] = {"alertname": name, "fingerprint": alert.fingerprint, "status": alert.status}
        if name not in kinds:
            results.append(result | {"action": "ignored", "why": "alertname is not in incidents.alert_kinds"})
            continue
        results.append(result | _one(service, alert, name, actor))
    return results


def _one(service: IncidentService, alert: AlertPayload, name: str, actor: str) -> dict[str, Any]:
    db = service.registry._reader()
    starts = _time(alert.startsAt)
    derived = derived_incident_id(starts[:10], "alert", alert.fingerprint, starts)
    current = q.open_for_alert(db, alert.fingerprint)
    labels = alert.labels
    details: dict[str, Any] = {"action": "alert", "alert": name, "alert_status": alert.status,
                               "fingerprint": alert.fingerprint, "starts_at": starts,
                               "summary": alert.annotations.get("summary", "")[:4096]}  # fmt: skip
    if labels.get("key_id"):
        details["keys"] = [labels["key_id"][:256]]
    if labels.get("node"):
        details["nodes"] = [labels["node"][:256]][:MAX_NODES]
    if alert.status == "resolved":
        if current is None:
            return {"action": "ignored", "why": "no incident is open for this alert"}
        ends = _time(alert.endsAt) if alert.endsAt and alert.endsAt.year > 1 else starts
        outcome = service._write(f"{current}:alert:{_hash(alert.fingerprint, starts, 'resolved')}", current, actor,
                                 details, f"{name} resolved", occurred_at=ends)  # fmt: skip
        return {"action": "duplicate" if outcome.status == "duplicate" else "resolved", "incident": current}
    if current is None:
        details |= {"action": "opened", "title": f"{name}: {alert.annotations.get('summary', '')}"[:4096].rstrip(": "),
                    "severity": SEVERITY.get(labels.get("severity", ""), "high"), "status": "open",
                    "source": "alert", "alert_key": alert.fingerprint}  # fmt: skip
        outcome = service._write(f"{derived}:opened", derived, actor, details, f"{name} firing", occurred_at=starts)
        return {"action": "duplicate" if outcome.status == "duplicate" else "opened", "incident": derived}
    if current == derived:
        return {"action": "duplicate", "incident": current}  # the delivery that opened it, again
    outcome = service._write(f"{current}:alert:{_hash(alert.fingerprint, starts, 'firing')}", current, actor,
                             details, f"{name} firing again", occurred_at=starts)  # fmt: skip
    return {"action": "duplicate" if outcome.status == "duplicate" else "updated", "incident": current}
