"""Plain lines (``plain.py``) to keylife events, and the crypto audit alert bookkeeping.

A plain line carries no id and, under the web logger, no time: ``Adapter.text_stem`` gives both
(``time_source="read"`` when the time is the time of reading). The table is in docs/datafold.md
("Plain lines").
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from keylife.datafold.answers import SYSTEM_KEY_ID  # mainline constants.rs:9
from keylife.datafold.build import CLIENT_KEY, MASTER_KEY, make, master_key, node_key, system_key
from keylife.datafold.plain import Plain

if TYPE_CHECKING:
    from keylife.datafold.contract import Line
    from keylife.datafold.mapping import Adapter


class AlertBook:
    """``CRYPTO AUDIT ALERT`` lines repeat a JSON record just logged (audit_logger.rs:698-705: the
    record on ``crypto_audit``, then, for Critical/Error/Security events, the alert): each record that
    will alert is expected once per source; an alert matching one is a duplicate, any other is
    counted as uncorrelated. Neither is ever rejected."""

    def __init__(self) -> None:
        self._pending: Counter[tuple[str, str, str, str]] = Counter()

    def expect(self, source: str, severity: str, component: str, operation: str) -> None:
        if len(self._pending) > 10_000:  # alerts that never came (json output on, alerting off)
            self._pending.clear()
        self._pending[(source, severity, component, operation)] += 1

    def match(self, source: str, severity: str, component: str, operation: str) -> bool:
        key = (source, severity, component, operation)
        if self._pending[key] > 0:
            self._pending[key] -= 1
            if not self._pending[key]:
                del self._pending[key]
            return True
        return False


def _system_key(adapter: Adapter, node: str) -> str:
    """mainline's system key: the log lines name no key bytes, the status answer does (``status.py``
    names it like a client key, by its public key's first 8 bytes). Once the poller has seen it, the
    log lines name that key; before, the node's one system-key name (``build.system_key``)."""
    known = adapter.tracker.clients.get(SYSTEM_KEY_ID)
    return known["key_id"] if known else system_key(node)


def plain_events(adapter: Adapter, r: Plain, line: Line, stamp: str | None) -> list[dict[str, Any]]:
    kind, g = r.kind, r.groups
    if kind == "crypto_audit_alert":
        seen = adapter.alerts.match(line.source, g[0], g[1], g[2])
        adapter.counts["crypto_audit_alert." + ("duplicate" if seen else "uncorrelated")] += 1
        return []
    if kind == "unified_crypto_audit":  # names no key (the event's key id is not printed)
        adapter.counts["noise.unified_crypto_audit"] += 1
        return []
    node = adapter.node_of(line)
    if kind == "request_verified" and adapter.verified.get(line.source) == (g[0], g[1]):
        del adapter.verified[line.source]  # the SECURITY_EVENT success just before it counted this use
        adapter.counts["usage.duplicate"] += 1
        return []
    stem, at, time_source = adapter.text_stem(line, stamp, r.message)
    if kind in ("request_verified", "signature_verified"):
        return adapter.use(node, g[0], "verify", at, stem, line, CLIENT_KEY)
    attrs: dict[str, Any] = {"datafold.shape": "plain", "datafold.line": kind, "time_source": time_source}
    if kind == "client_key_registered":  # the RFC 9421 keyid of this client's requests is its client id
        attrs["client_id"] = g[0]
        return [make(f"{stem}-0", "generated", g[0], at, node=node, actor=g[0], attributes=attrs, **CLIENT_KEY),
                make(f"{stem}-1", "activated", g[0], at, node=node, actor=g[0], attributes=attrs)]  # fmt: skip
    if kind == "master_key_generated":
        attrs["derivation_" + g[0]] = g[1]
        key = master_key(node)
        reason = f"master key pair generated ({g[0]} {g[1]}); the at-rest keys derive from it"
        return [make(f"{stem}-0", "generated", key, at, node=node, reason=reason, attributes=attrs, **MASTER_KEY),
                make(f"{stem}-1", "activated", key, at, node=node, attributes=attrs)]  # fmt: skip
    if kind == "system_key_registered":
        key = _system_key(adapter, node)
        return [make(f"{stem}-0", "generated", key, at, node=node, attributes=attrs, **CLIENT_KEY),
                make(f"{stem}-1", "activated", key, at, node=node, attributes=attrs)]  # fmt: skip
    if kind == "system_key_removed":
        return [make(f"{stem}-0", "revoked", _system_key(adapter, node), at, node=node,
                     reason="system public key removed from the node", attributes=attrs)]  # fmt: skip
    subject, actor, reason = node_key(node), None, r.message
    if kind == "system_key_registration_failed":
        subject, attrs["error"] = _system_key(adapter, node), g[0]
    elif kind == "signature_invalid_for_key":
        if g[0] == SYSTEM_KEY_ID:
            subject = _system_key(adapter, node)
        else:
            attrs["claimed_key_id"] = g[0]
    elif kind == "signature_failed":
        subject = actor = g[0]
        attrs["error"] = g[1] if len(g) > 1 else None
    elif kind in ("rotation_propagated", "rotation_propagation_failed"):
        subject, attrs["target_node"] = node_key(g[0]), g[0]
        attrs["error"] = g[1] if len(g) > 1 else None
    elif kind == "threat_detected":
        attrs |= {"threat_level": g[0].lower(), "threat_pattern": g[1], "confidence": g[3]}
    elif kind == "client_key_registration_failed":
        attrs["error"] = g[0]
    return [make(f"{stem}-0", "security_event", subject, at, node=node, actor=actor, reason=reason,
                 attributes=attrs)]  # fmt: skip
