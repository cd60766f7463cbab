"""Builders of DataFold output exactly as its Rust code formats and serializes it (shiba4life/fold_db,
branches mainline, security, security2). Each builder cites
the struct or ``format!`` it follows; field order is the struct's (serde writes fields in declaration
order), JSON is compact (``serde_json::to_string``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

NODE = "node-a"
SESSION = "5b0c6c7e-3d7e-4a7a-9f44-1f7f0c1b2d3e"


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


# ----- framings ------------------------------------------------------------------------------------
def web(level: str, message: str) -> str:
    """mainline/security src/web_logger.rs:31: ``format!("{} - {}", record.level(), record.args())``."""
    return f"{level} - {message}"


def env(stamp: str, level: str, target: str, message: str, colour: bool = False) -> str:
    """security2 src/logging/mod.rs:151 ``env_logger::init()``, env_logger 0.10's default format:
    ``[{rfc3339 seconds} {level:<5} {target}] {args}``; on a terminal the brackets are dimmed and the
    level coloured (``\\x1b[2m[`` ... ``\\x1b[32mINFO \\x1b[0m``)."""
    if not colour:
        return f"[{stamp} {level:<5} {target}] {message}"
    return f"\x1b[2m[\x1b[0m{stamp} \x1b[32m{level:<5}\x1b[0m {target}\x1b[2m]\x1b[0m {message}"


# ----- security crypto/audit_logger.rs:39-84: AuditEvent and OperationResult ------------------------
def failure(error_type: str, message: str, code: str | None) -> dict[str, Any]:
    return {"Failure": {"error_type": error_type, "error_message": message, "error_code": code}}


def audit_event(
    event_type: str,
    severity: str,
    component: str,
    operation: str,
    result: Any,
    metadata: dict[str, Any],
    correlation_id: str | None,
    *,
    millis: int | None = 0,
    event_id: str | None = None,
    timestamp: str = "2025-06-16T12:30:49.355921123Z",
) -> dict[str, Any]:
    """``AuditEvent`` (actor is always None on every constructor: audit_logger.rs:254, :299, :336, ...)."""
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "timestamp": timestamp,
        "event_type": event_type,
        "severity": severity,
        "component": component,
        "operation": operation,
        "actor": None,
        "result": result,
        "duration": None if millis is None else {"secs": millis // 1000, "nanos": (millis % 1000) * 1_000_000},
        "metadata": metadata,
        "correlation_id": correlation_id,
        "session_id": SESSION,
    }


def key_operation(
    operation: str, result: Any, correlation_id: str | None, key_type: str = "key_rotation", **kw: Any
) -> dict[str, Any]:
    """``log_key_operation`` (audit_logger.rs:312-345): metadata is only ``key_type``; Info on Success."""
    severity = "Info" if result == "Success" else "Error"
    return audit_event(
        "KeyOperation", severity, "crypto_key_ops", operation, result, {"key_type": key_type}, correlation_id, **kw
    )


def security_audit(
    operation: str,
    details_type: str,
    threat: str,
    source: str | None,
    target: str | None,
    extra: dict[str, str],
    result: Any,
    correlation_id: str | None,
    **kw: Any,
) -> dict[str, Any]:
    """``log_security_event`` (audit_logger.rs:401-450): Warning on Success, Critical on Failure."""
    meta: dict[str, Any] = {"event_type": details_type, "threat_level": threat}
    if source is not None:
        meta["source"] = source
    if target is not None:
        meta["target"] = target
    meta.update(extra)
    severity = "Warning" if result == "Success" else "Critical" if isinstance(result, dict) else "Error"
    return audit_event(
        "Security", severity, "crypto_security", operation, result, meta, correlation_id, millis=None, **kw
    )


def crypto_line(record: dict[str, Any], framing: str = "web") -> str:
    """audit_logger.rs:716-717: ``log::info!(target: "crypto_audit", "{}", json_str)``."""
    message = compact(record)
    return web("INFO", message) if framing == "web" else env("2025-06-16T12:30:49Z", "INFO", "crypto_audit", message)


def alert_line(record: dict[str, Any], framing: str = "web") -> str:
    """audit_logger.rs:727-736: ``warn!(target: "crypto_audit_alert", "CRYPTO AUDIT ALERT: {:?} - {} - {}")``."""
    message = f"CRYPTO AUDIT ALERT: {record['severity']} - {record['component']} - {record['operation']}"
    return (
        web("WARN", message) if framing == "web" else env("2025-06-16T12:30:49Z", "WARN", "crypto_audit_alert", message)
    )


# ----- security datafold_node/signature_auth.rs:90-141, 516-600: SECURITY_EVENT ---------------------------
METRICS = {
    "processing_time_ms": 2,
    "signature_verification_time_ms": 0,
    "database_lookup_time_ms": 0,
    "nonce_validation_time_ms": 0,
    "nonce_store_size": 14,
    "nonce_store_utilization_percent": 0.0,
    "recent_failures": 1,
    "pattern_score": 0.0,
    "cache_hit_rate": 0.0,
    "cache_miss_count": 0,
    "requests_per_second": 0.0,
    "avg_latency_ms": 2.0,
    "p95_latency_ms": 0.0,
    "p99_latency_ms": 0.0,
    "memory_usage_bytes": 0,
    "nonce_cleanup_operations": 0,
    "performance_alert_count": 0,
}
# AuthenticationError::severity (security signature_auth.rs:398-410; security2 auth/auth_errors.rs:356)
ERROR_SEVERITY = {
    "MissingHeaders": "Info",
    "InvalidSignatureFormat": "Warning",
    "SignatureVerificationFailed": "Warning",
    "TimestampValidationFailed": "Warning",
    "NonceValidationFailed": "Critical",
    "PublicKeyLookupFailed": "Warning",
    "ConfigurationError": "Critical",
    "UnsupportedAlgorithm": "Info",
    "RateLimitExceeded": "Critical",
    "CryptographicError": "Critical",
}
LEVEL = {"Info": "INFO", "Warning": "WARN", "Error": "ERROR", "Critical": "ERROR"}  # signature_auth.rs:1290-1293


def security_event(
    event_type: str,
    severity: str,
    error: dict[str, Any] | None,
    correlation_id: str,
    key_id: str | None = None,
    path: str = "/api/schemas",
    timestamp: int = 1750075410,
) -> dict[str, Any]:
    """``SecurityEvent``; ``client_info.key_id`` is None from extract_client_info (:1958) and set only on
    success (:2298-2299)."""
    return {
        "event_id": str(uuid.uuid4()),
        "correlation_id": correlation_id,
        "timestamp": timestamp,
        "event_type": event_type,
        "severity": severity,
        "client_info": {
            "ip_address": "198.51.100.23",
            "user_agent": "datafold-js-sdk/1.0",
            "key_id": key_id,
            "forwarded_for": None,
        },
        "request_info": {
            "method": "GET",
            "path": path,
            "query_params": None,
            "content_type": None,
            "content_length": None,
            "signature_components": None,
        },
        "error_details": error,
        "metrics": METRICS,
    }


def failure_line(variant: str, fields: dict[str, Any], correlation_id: str | None = None) -> tuple[str, dict]:
    """log_authentication_failure (signature_auth.rs:2186-2236): correlation id of the error, severity of the error."""
    corr = correlation_id or str(uuid.uuid4())
    record = security_event(
        "AuthenticationFailure", ERROR_SEVERITY[variant], {variant: {**fields, "correlation_id": corr}}, corr
    )
    return web(LEVEL[record["severity"]], "SECURITY_EVENT: " + compact(record)), record


# ----- security events/event_types.rs:78-110, 287-310, 356-375: the event bus -------------------------------
def verification_event(event_id: str, result: Any, correlation_id: str, severity: str = "Info") -> dict[str, Any]:
    """``VerificationEvent`` as key_rotation_integration.rs:353-386 fills it."""
    return {
        "event_id": event_id,
        "timestamp": "2025-06-16T13:31:45.553804Z",
        "category": "KeyRotation",
        "severity": severity,
        "platform": "DataFoldNode",
        "component": "key_rotation_network",
        "operation": "network_propagation",
        "actor": None,
        "result": result,
        "duration": None,
        "metadata": {},
        "correlation_id": correlation_id,
        "trace_id": None,
        "session_id": None,
        "environment": "production",
    }


def key_rotation(
    base: dict[str, Any], rotation_type: str, old: str, new: str, operation_id: str, targets: list[str], status: str
) -> dict[str, Any]:
    """``{"KeyRotation": KeyRotationEvent}`` (externally tagged ``SecurityEvent``)."""
    return {
        "KeyRotation": {
            "base": base,
            "rotation_type": rotation_type,
            "user_id": "client-7f3a",
            "old_key_id": old,
            "new_key_id": new,
            "rotation_reason": "Scheduled",
            "operation_id": operation_id,
            "target_nodes": targets,
            "propagation_status": status,
            "affected_associations": None,
            "rotation_metadata": {},
        }
    }


def envelope(event: dict[str, Any]) -> dict[str, Any]:
    """``EventEnvelope`` (transport.rs:651-667); ``PlatformInfo`` (:670-681) names no node."""
    platform = {"platform_type": "datafold-node", "version": "0.1.0", "host": None, "instance_id": None, "metadata": {}}
    return {
        "version": "1.0",
        "source": platform,
        "target": None,
        "event": event,
        "metadata": {},
        "envelope_timestamp": "2025-06-16T13:31:45.600000Z",
        "envelope_id": str(uuid.uuid4()),
    }
