"""What a ``SECURITY_EVENT``'s ``error_details`` says (issue 12 item 4).

``error_details`` is ``Option<AuthenticationError>``, a serde enum with struct variants and no
``#[serde(...)]`` attribute, so it is externally tagged: ``{"NonceValidationFailed": {"nonce": ...,
"reason": ..., "correlation_id": ...}}`` (security datafold_node/signature_auth.rs:90-141; security2
datafold_node/auth/auth_errors.rs:12-67 adds ``CryptographicError``). Each variant becomes one precise
``auth.failure`` code, so a replay, a rate limit and a stale timestamp stay apart in keylife.
"""

from __future__ import annotations

from typing import Any

# variant -> (auth.failure code, the variant's fields kept as attributes)
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "MissingHeaders": ("missing_headers", ("missing",)),
    "InvalidSignatureFormat": ("invalid_signature_format", ("reason",)),
    "SignatureVerificationFailed": ("signature_invalid", ("key_id",)),
    "TimestampValidationFailed": ("timestamp_invalid", ("timestamp", "current_time", "reason")),
    "NonceValidationFailed": ("nonce_invalid", ("nonce", "reason")),  # "replay" when the reason says so
    "PublicKeyLookupFailed": ("unknown_key", ("key_id",)),
    "ConfigurationError": ("configuration_error", ("reason",)),
    "UnsupportedAlgorithm": ("unsupported_algorithm", ("algorithm",)),
    "RateLimitExceeded": ("rate_limited", ("client_id",)),
    "CryptographicError": ("cryptographic_error", ("operation",)),  # security2 only
}


def correlation(value: str | None) -> str | None:
    """``correlation_id`` is ``"disabled"`` when ``include_correlation_ids`` is off (security
    signature_auth.rs:1932-1937, security2 auth_middleware.rs:150-155): not an id, it would join
    every request of such a node."""
    return None if value == "disabled" or not value else value


def describe(err: dict[str, Any] | None) -> tuple[str | None, str | None, dict[str, Any], str | None]:
    """(variant, auth.failure code, attributes, the key the node found and rejected a signature of).

    Only ``SignatureVerificationFailed`` names a key the node holds; ``PublicKeyLookupFailed`` names
    a key id the node does not have (kept as ``auth.claimed_key_id``, never a subject), and
    ``RateLimitExceeded.client_id`` is the client's IP address (signature_auth.rs:2000-2004).
    The reference samples' ``{"code", "message"}`` form is still read.
    """
    if not err:
        return None, None, {}, None
    if len(err) == 1:
        ((variant, body),) = err.items()
        if type(body) is dict:
            code, names = VARIANTS.get(variant, ("other", ()))
            attrs: dict[str, Any] = {"auth.failure": code, "auth.error": variant}
            for name in names or tuple(body):
                value = body.get(name)
                if name == "correlation_id" or value is None or isinstance(value, dict):
                    continue
                if isinstance(value, list):
                    value = ",".join(map(str, value))
                attrs["auth.claimed_key_id" if variant == "PublicKeyLookupFailed" else
                      "auth.source" if name == "client_id" else f"auth.{name}"] = value  # fmt: skip
            if variant == "NonceValidationFailed" and "replay" in str(body.get("reason", "")).lower():
                attrs["auth.failure"] = "replay"  # "Nonce replay detected": signature_auth.rs:2145-2149
            key = body.get("key_id") if variant == "SignatureVerificationFailed" else None
            return variant, attrs["auth.failure"], attrs, key if isinstance(key, str) and key else None
    code, message = err.get("code"), err.get("message")
    attrs = {"error_code": code if isinstance(code, str) else None,
             "error_message": message if isinstance(message, str) else None}  # fmt: skip
    return None, None, attrs, None
