"""Event-bus events to keylife events (issue 12 items 5 and 6).

The bus lives in memory (security events/transport.rs: every transport but in-memory is "not yet
implemented"); its one file output is ``AuditLogHandler`` writing each ``SecurityEvent`` bare, one
JSON line (events/handlers.rs:104-110). ``shapes.bus_event`` reads that and the envelope form.

Ids: the propagation handler publishes ``PropagationStarted``, ``NodeUpdated`` (one per node),
``PropagationCompleted`` / ``PropagationFailed`` as clones of the rotation event, ``base`` and its
``event_id`` included (events/key_rotation_handlers.rs:373-401). So the id is
``df-<base.event_id>-<content digest>-<n>``: distinct events never collide (keylife would answer 409
and drop the later ones), and the same event read twice, bare or in an envelope, keeps its id.

The clones also keep the rotation event's ``base.result`` (``InProgress`` when the handler ran on
``RotationStarted``, ``Success`` on ``RotationCompleted``: handlers.rs:436-443), so for them the
``rotation_type`` and ``propagation_status`` say what happened, not the result; only a ``Failure``
result is taken as "not applied".
"""

from __future__ import annotations

from typing import Any

from keylife.datafold.build import CLIENT_KEY, content_stem, failure, make, meta_attrs, node_key, text, utc
from keylife.datafold.shapes import BusEvent, Failure


def bus_events(r: BusEvent, node: str) -> list[dict[str, Any]]:
    """``node``: the node whose output this is (the envelope's ``source`` names none)."""
    f, at = r.fields, utc(r.stamp, r.timestamp)
    stem = f"df-{r.event_id}-{content_stem(r.raw)}"
    attrs = {"datafold.shape": "event_bus", "datafold.variant": r.variant, "datafold.operation": r.operation,
             "datafold.component": r.component, "severity": r.severity.lower(), **failure(r.result)}  # fmt: skip
    if r.variant != "KeyRotation":
        key = text(f.get("key_id")) or node_key(node)  # never the actor: a user or client name is not a key
        attrs |= {"source_ip": text(f.get("source_ip")), **meta_attrs(f, {"key_id", "source_ip"}, "bus")}
        return [make(f"{stem}-0", "security_event", key, at, node=node, actor=r.actor,
                     correlation_id=r.correlation_id, reason=f"{r.variant} {r.operation}",
                     attributes=attrs)]  # fmt: skip
    kind, old, new = f["rotation_type"], f["old_key_id"], f["new_key_id"]
    applied_ok = not isinstance(r.result, Failure)
    targets: list[str] = f["target_nodes"]
    base = {"actor": r.actor, "correlation_id": f["operation_id"] or r.correlation_id}
    if kind == "RotationCompleted" and r.result == "Success" and old and new:
        return [make(f"{stem}-0", "rotated", old, at, successor=new, node=node, reason=f["rotation_reason"],
                     attributes=attrs, **base, **CLIENT_KEY)]  # fmt: skip
    applied: list[tuple[str, str, str]] = []  # (key, node, state the node applied)
    if kind == "NodeUpdated" and applied_ok:
        # handlers.rs:395-398: target_nodes = [the node]; the reference samples name it in metadata instead
        updated = targets[0] if len(targets) == 1 else text(r.metadata.get("node_id")) or r.target
        if updated:
            applied = [(k, updated, s) for k, s in ((new, "active"), (old, "deactivated")) if k]
    elif kind == "PropagationStarted" and applied_ok and old:  # the targets hold the old key until updated
        applied = [(old, n, "active") for n in targets]
    elif kind == "PropagationCompleted" and applied_ok and f["propagation_status"] == "Completed":
        applied = [(k, n, s) for n in targets for k, s in ((new, "active"), (old, "deactivated")) if k]
    if applied:
        return [make(f"{stem}-{i}", "propagated", k, at, node=n, state=s, attributes=attrs, **base)
                for i, (k, n, s) in enumerate(applied)]  # fmt: skip
    attrs |= {"rotation_type": kind, "propagation_status": f["propagation_status"], "target_nodes": ",".join(targets),
              "operation_id": f["operation_id"], "rotation_reason": f["rotation_reason"], "user_id": f["user_id"],
              "old_key": old, "new_key": new, "affected_associations": f.get("affected_associations")}  # fmt: skip
    return [make(f"{stem}-0", "security_event", old or new or node_key(node), at, node=node,
                 reason=f"key rotation {kind} ({f['propagation_status']})", attributes=attrs, **base)]  # fmt: skip
