"""Issue 12 items 4, 6, 10: SECURITY_EVENT lines exactly as the request-signature middleware logs them
(security datafold_node/signature_auth.rs; security2 datafold_node/auth/), and the plain
per-request success line."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from keylife.datafold.contract import Line
from tests import datafold_real as real
from tests.test_datafold_mapping import new_adapter, valid

NODE = real.NODE
NODE_ID = f"datafold-node:{NODE}"
SRC = "sse:http://node-a:9001/api/logs/stream"
NONCE = "6f1c9a52-3b7e-4c1d-9e2a-5d8f7b0c4a13"

# (variant, its fields as the middleware fills them, the auth.failure code, attributes kept, subject)
VARIANTS = [
    # create_signature_parsing_error (signature_auth.rs:2036-2050)
    (
        "MissingHeaders",
        {"missing": ["signature-input", "signature"]},
        "missing_headers",
        {"auth.missing": "signature-input,signature"},
        NODE_ID,
    ),
    (
        "InvalidSignatureFormat",
        {"reason": "Required component '@method' not covered by signature"},
        "invalid_signature_format",
        {"auth.reason": "Required component '@method' not covered by signature"},
        NODE_ID,
    ),
    # a key the node found and whose signature failed (verify_signature_against_database, :1777)
    (
        "SignatureVerificationFailed",
        {"key_id": "client-7f3a"},
        "signature_invalid",
        {"auth.key_id": "client-7f3a"},
        "client-7f3a",
    ),
    (
        "TimestampValidationFailed",
        {"timestamp": 1750070000, "current_time": 1750075410, "reason": "Timestamp too old"},
        "timestamp_invalid",
        {"auth.timestamp": "1750070000", "auth.current_time": "1750075410", "auth.reason": "Timestamp too old"},
        NODE_ID,
    ),
    # check_and_store_nonce_enhanced (:2143-2149): a replay
    (
        "NonceValidationFailed",
        {"nonce": NONCE, "reason": "Nonce replay detected"},
        "replay",
        {"auth.nonce": NONCE, "auth.reason": "Nonce replay detected"},
        NODE_ID,
    ),
    # security2 auth_middleware.rs:877-913: a malformed nonce is not a replay
    (
        "NonceValidationFailed",
        {"nonce": "abc", "reason": "UUID must be exactly 36 characters"},
        "nonce_invalid",
        {"auth.nonce": "abc", "auth.reason": "UUID must be exactly 36 characters"},
        NODE_ID,
    ),
    # a key id the node does not hold: never a subject (issue 12 item 6)
    (
        "PublicKeyLookupFailed",
        {"key_id": "admin-console"},
        "unknown_key",
        {"auth.claimed_key_id": "admin-console"},
        NODE_ID,
    ),
    (
        "ConfigurationError",
        {"reason": "Rate limiter lock failure"},
        "configuration_error",
        {"auth.reason": "Rate limiter lock failure"},
        NODE_ID,
    ),
    (
        "UnsupportedAlgorithm",
        {"algorithm": "rsa-pss-sha512"},
        "unsupported_algorithm",
        {"auth.algorithm": "rsa-pss-sha512"},
        NODE_ID,
    ),
    # check_rate_limits (:2000-2019): client_id is the IP address
    ("RateLimitExceeded", {"client_id": "198.51.100.23"}, "rate_limited", {"auth.source": "198.51.100.23"}, NODE_ID),
    # security2 auth_errors.rs:63-66
    (
        "CryptographicError",
        {"operation": "ed25519_verify"},
        "cryptographic_error",
        {"auth.operation": "ed25519_verify"},
        NODE_ID,
    ),
]


@pytest.mark.parametrize(("variant", "fields", "code", "kept", "subject"), VARIANTS)
def test_each_error_variant_is_a_precise_failure(
    tmp_path: Path, variant: str, fields: dict, code: str, kept: dict, subject: str
) -> None:
    text, record = real.failure_line(variant, fields)
    adapter = new_adapter(tmp_path)
    (event,) = valid(adapter.feed(Line(text, SRC, 0, NODE)))
    assert event == {
        "id": f"df-{record['event_id']}-0",
        "type": "security_event",
        "key_id": subject,
        "occurred_at": "2025-06-16T12:03:30Z",
        "node": NODE,
        "correlation_id": record["correlation_id"],
        "reason": f"AuthenticationFailure: {code}" + (f" ({fields['reason']})" if "reason" in fields else ""),
        "attributes": {
            "datafold.shape": "security_event",
            "datafold.event_type": "AuthenticationFailure",
            "severity": record["severity"].lower(),
            "source_ip": "198.51.100.23",
            "user_agent": "datafold-js-sdk/1.0",
            "http.method": "GET",
            "http.path": "/api/schemas",
            "auth.failure": code,
            "auth.error": variant,
            **kept,
            "processing_time_ms": "2",
        },
    }
    assert "actor" not in event  # client_info.key_id is null on failures
    assert not (tmp_path / "rejects.ndjson").exists()


def test_disabled_correlation_id_is_no_correlation_id(tmp_path: Path) -> None:
    # generate_correlation_id (signature_auth.rs:1932-1937) with include_correlation_ids = false
    text, _ = real.failure_line("MissingHeaders", {"missing": ["signature"]}, correlation_id="disabled")
    adapter = new_adapter(tmp_path)
    (event,) = valid(adapter.feed(Line(text, SRC, 0, NODE)))
    assert "correlation_id" not in event


def test_suspicious_activity_has_no_error_details(tmp_path: Path) -> None:
    # signature_auth.rs:2246-2275: pattern event, error_details None, severity Critical
    corr = str(uuid.uuid4())
    record = real.security_event("SuspiciousActivity", "Critical", None, corr)
    record["metrics"] = {**record["metrics"], "pattern_score": 0.9}
    adapter = new_adapter(tmp_path)
    (event,) = valid(adapter.feed(Line(real.web("ERROR", "SECURITY_EVENT: " + real.compact(record)), SRC, 0, NODE)))
    assert (event["key_id"], event["reason"], event["attributes"]["pattern_score"]) == (
        NODE_ID,
        "SuspiciousActivity",
        "0.9",
    )


def test_truncated_security_event_is_rejected_as_truncated(tmp_path: Path) -> None:
    # serialize_event (signature_auth.rs:1314-1327): an event over max_log_entry_size is replaced
    text = real.web("ERROR", 'SECURITY_EVENT: {"truncated": true, "original_size": 9120, "message": "Event too large"}')
    adapter = new_adapter(tmp_path)
    assert adapter.feed(Line(text, SRC, 0, NODE)) == []
    record = orjson.loads((tmp_path / "rejects.ndjson").read_bytes())
    assert record["shape"] == "security_event" and record["reason"].startswith("SECURITY_EVENT truncated by the node")
    assert "9120 bytes" in record["reason"]
    # a line cut short on its way (not by the node) says so too
    _, full = real.failure_line("MissingHeaders", {"missing": ["signature"]})
    cut = real.web("INFO", "SECURITY_EVENT: " + real.compact(full)[:200])
    assert adapter.feed(Line(cut, SRC, 1, NODE)) == []
    last = orjson.loads((tmp_path / "rejects.ndjson").read_bytes().splitlines()[-1])
    assert last["reason"].startswith("SECURITY_EVENT (truncated?) is not valid JSON")


def test_success_counts_once_with_log_successful_auth_and_the_plain_line_alone_otherwise(tmp_path: Path) -> None:
    corr = str(uuid.uuid4())
    # log_authentication_success (signature_auth.rs:2284-2327), only when log_successful_auth (default false, :725)
    ok = real.security_event("AuthenticationSuccess", "Info", None, corr, key_id="client-7f3a", path="/api/query")
    success = real.web("INFO", "SECURITY_EVENT: " + real.compact(ok))
    # the middleware's line right after (signature_auth.rs:3311-3315, security2 auth_middleware.rs:705)
    plain = real.web("INFO", "Successfully verified signature for client client-7f3a on path /api/query")
    adapter = new_adapter(tmp_path)
    reports = [
        e for n, text in enumerate([success, plain, plain]) for e in valid(adapter.feed(Line(text, SRC, n, NODE)))
    ]
    reports += valid(adapter.flush())
    # the success at its own time; the first plain line repeats it (not counted); the second, alone, is a use
    # at the time of reading (the web logger prints none)
    assert [(r["key_id"], r["interval_start"], r["usage"]) for r in reports] == [
        ("client-7f3a", "2025-06-16T12:03:00Z", {"verify": 1}),
        ("client-7f3a", "2026-01-01T00:00:00Z", {"verify": 1}),
    ]
    assert adapter.counts["usage.duplicate"] == 1
    assert not (tmp_path / "rejects.ndjson").exists()
