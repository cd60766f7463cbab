"""A fake DataFold node's HTTP API, written after shiba4life/fold_db (branches mainline, security,
security2), for keylife's poller, SSE client and request signing.

The signature middleware follows ``security`` ``src/datafold_node/signature_auth.rs`` (``security2``:
the same code in ``src/datafold_node/auth/``), with the node's default ``SignatureAuthConfig``
(``:719-741``; ``security2`` ``auth/auth_config.rs:112-135``), step by step as
``authenticate_request`` (``:1858-1930``) runs them:

1. rate limit by peer IP: 100 requests per 60 s (``RateLimitingConfig`` ``:745-753``,
   ``check_rate_limit`` ``:1344-1387``; failures are not counted apart: ``is_failure`` is false);
2. headers: ``signature-input`` then ``signature`` (``:3035-3050``), ``parse_signature_input``
   (``:3099-3145``: split at the first ``=``, then at ``;``; components in parentheses), params
   ``created`` (u64), ``keyid``, ``alg``, ``nonce`` (``:3052-3082``), ``alg`` must be ``ed25519``; a
   parse error whose text holds "Missing" is 400 ``MISSING_HEADERS`` (``missing``: Signature-Input,
   Signature or Unknown), any other 400 ``INVALID_SIGNATURE_FORMAT`` (``:2025-2051``);
3. ``created``: at most 60 s ahead (30 s ahead passes at once), else at most 300 + 30 s old
   (``validate_timestamp_enhanced`` ``:2053-2111``): 401 ``TIMESTAMP_VALIDATION_FAILED``;
4. nonce: a UUID v4 (``:2596-2632``), not seen within 300 s (``:2114-2165``): 401
   ``NONCE_VALIDATION_FAILED`` ("Nonce replay detected");
5. covered components include ``@method``, ``@target-uri``, ``content-type``, ``content-digest``
   (``:2168-2186``): 400 ``INVALID_SIGNATURE_FORMAT``.

The node never verifies the signature itself (``verify_signature_against_database`` is reached
only from dead code, ``:3371``). ``verify_signatures=True`` makes this fake stricter than the node:
it checks the Ed25519 signature against the registered key by RFC 9421 (http-message-signatures),
so keylife's signatures are proven right, not just well-formed. Refusals answer exactly as
``CustomAuthError::error_response`` (``:3217-3233``) with the production message of
``user_friendly_message`` (``:202-221``). Exempt paths: ``should_skip_verification`` (``:3421-3433``).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import HTTPMessageVerifier, HTTPSignatureKeyResolver, algorithms

SKIP_PATHS = ("/api/system/status", "/api/crypto/keys/register", "/", "/index.html")
REQUIRED = ("@method", "@target-uri", "content-type", "content-digest")
# (HTTP status, public_message, documentation link) per error code: signature_auth.rs:158-198, 317-345.
ERRORS = {
    "MISSING_HEADERS": (400, "Missing required authentication headers. Please include Signature-Input and "
                        "Signature headers.", "https://docs.datafold.dev/signature-auth/setup"),
    "INVALID_SIGNATURE_FORMAT": (400, "Invalid signature format. Please verify your signature encoding and header "
                                 "format.", "https://docs.datafold.dev/signature-auth/setup"),
    "SIGNATURE_VERIFICATION_FAILED": (401, "Signature verification failed. Please check your signature calculation "
                                      "and key.", "https://docs.datafold.dev/signature-auth/troubleshooting"
                                      "#signature-verification"),
    "TIMESTAMP_VALIDATION_FAILED": (401, "Request timestamp invalid. Please ensure timestamp is within allowed time "
                                    "window.", "https://docs.datafold.dev/signature-auth/troubleshooting"
                                    "#timestamp-issues"),
    "NONCE_VALIDATION_FAILED": (401, "Request validation failed. Please use a unique nonce for each request.",
                                "https://docs.datafold.dev/signature-auth/troubleshooting#nonce-validation"),
    "RATE_LIMIT_EXCEEDED": (429, "Rate limit exceeded. Please reduce request frequency and try again later.",
                            "https://docs.datafold.dev/signature-auth/rate-limits"),
}  # fmt: skip


def chrono(at: datetime) -> str:
    """chrono's serde form of a ``DateTime<Utc>`` (RFC 3339, nanoseconds, ``Z``)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond * 1000:09d}Z"


def refusal_body(code: str, correlation_id: str) -> dict[str, Any]:
    """``CustomAuthError::error_response``: the production message (``detailed_error_messages``
    is false by default), ``"{public_message}. For assistance, reference error ID: {id} or visit: {link}"``."""
    _, message, link = ERRORS[code]
    text = f"{message}. For assistance, reference error ID: {correlation_id} or visit: {link}"
    return {"error": True, "error_code": code, "message": text, "correlation_id": correlation_id}


def api_error(code: str, message: str) -> dict[str, Any]:
    """``ApiResponse::<()>::error(ApiError::new(code, message))``: ``data`` skipped, ``details`` empty."""
    return {"success": False, "error": {"code": code, "message": message, "details": {}}}


class _Keys(HTTPSignatureKeyResolver):
    def __init__(self, node: FakeNode) -> None:
        self.node = node

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey:
        reg = self.node.registrations.get(key_id)
        if reg is None:
            raise KeyError(key_id)
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(reg["public_key"]))

    def resolve_private_key(self, key_id: str) -> Any:
        raise NotImplementedError


class FakeNode(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, branch: str = "security", *, verify_signatures: bool = True, lines: list[str] | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.branch = branch
        self.verify_signatures = verify_signatures
        self.lines = list(lines or [])  # what the web logger broadcasts (security's log stream)
        self.registrations: dict[str, dict[str, Any]] = {}  # client id -> PublicKeyRegistration
        self.rotations: list[dict[str, Any]] = []  # KeyRotationRecord-like dicts (security)
        self.system_key: dict[str, Any] | None = None  # mainline PublicKeyInfo
        self.nonces: dict[str, int] = {}  # NonceStore: nonce -> created
        self.requests_by_ip: dict[str, list[int]] = {}
        self.max_requests_per_window = 100
        self.clock_offset = 0  # seconds added to the node's clock (to make a client's clock look wrong)
        self.refusals: list[dict[str, Any]] = []  # what the middleware refused, with the reason it logs
        self.accepted: list[tuple[str, str, str]] = []  # (method, path, keyid) that passed the middleware
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # every request: method, path, headers
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def now(self) -> int:
        return int(time.time()) + self.clock_offset

    # ----- the middleware ---------------------------------------------------------------------
    def authenticate(self, handler: _Handler) -> str | None:
        """None when the request passes; else the error code (the refusal is recorded)."""
        ip = handler.client_address[0]
        now = self.now()
        with self.lock:
            seen = [t for t in self.requests_by_ip.get(ip, []) if t > now - 60] + [now]
            self.requests_by_ip[ip] = seen
            if len(seen) > self.max_requests_per_window:
                return self._refuse("RATE_LIMIT_EXCEEDED", f"client {ip}")
            try:
                components, keyid, nonce, created = self._parse(handler)
            except _Missing as exc:
                return self._refuse("MISSING_HEADERS", str(exc))
            except ValueError as exc:
                return self._refuse("INVALID_SIGNATURE_FORMAT", f"Permission error: {exc}")
            if created > now:
                if created - now > 60:
                    return self._refuse("TIMESTAMP_VALIDATION_FAILED", f"Timestamp too far in future: {created - now} "
                                        "seconds")  # fmt: skip
            elif now - created > 330:
                late = f"Timestamp outside allowed window: {now - created} seconds (max: 330)"
                return self._refuse("TIMESTAMP_VALIDATION_FAILED", late)
            if not _uuid4(nonce):
                return self._refuse("NONCE_VALIDATION_FAILED", "Permission error: Nonce must be UUID version 4")
            self.nonces = {n: c for n, c in self.nonces.items() if now - c < 300}
            if nonce in self.nonces:
                return self._refuse("NONCE_VALIDATION_FAILED", "Nonce replay detected")
            self.nonces[nonce] = created
            for required in REQUIRED:
                if required not in components:
                    return self._refuse("INVALID_SIGNATURE_FORMAT",
                                        f"Required component '{required}' not covered by signature")  # fmt: skip
        if self.verify_signatures and not self._verified(handler):
            return self._refuse("SIGNATURE_VERIFICATION_FAILED", f"key {keyid} (this fake only: the node never checks)")
        self.accepted.append((handler.command, handler.path, keyid))
        return None

    def _parse(self, handler: _Handler) -> tuple[list[str], str, str, int]:
        given = handler.headers.get("signature-input")
        if given is None:
            raise _Missing("Signature-Input")
        if handler.headers.get("signature") is None:
            raise _Missing("Signature")
        _label, eq, definition = given.partition("=")
        if not eq:
            raise ValueError("Invalid signature-input format")
        sections = definition.split(";")
        first = sections[0].strip()
        if not (first.startswith("(") and first.endswith(")")):
            raise ValueError("Invalid components format")
        components = [c.strip('"') for c in first[1:-1].split()]
        params = {}
        for section in sections[1:]:
            key, eq, value = section.partition("=")
            if eq:
                params[key.strip()] = value.strip()
        if "created" not in params:
            raise _Missing("Unknown")
        try:
            created = int(params["created"].strip('"'))
        except ValueError:
            raise ValueError("Invalid 'created' timestamp") from None
        for needed in ("keyid", "alg", "nonce"):
            if needed not in params:
                raise _Missing("Unknown")
        if params["alg"].strip('"') != "ed25519":
            raise ValueError(f"Unsupported algorithm: {params['alg'].strip(chr(34))}")
        return components, params["keyid"].strip('"'), params["nonce"].strip('"'), created

    def _verified(self, handler: _Handler) -> bool:
        message = _Message(handler.command, f"http://{handler.headers['host']}{handler.path}", handler.headers)
        verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=_Keys(self))
        try:
            verifier.verify(message, max_age=None, body=handler.body)
        except Exception:
            return False
        return True

    def _refuse(self, code: str, reason: str) -> str:
        self.refusals.append({"error_code": code, "reason": reason})
        return code


class _Missing(ValueError):
    pass


class _Message:
    def __init__(self, method: str, url: str, headers: Any) -> None:
        self.method, self.url, self.headers = method, url, headers


def _uuid4(nonce: str) -> bool:
    """``validate_uuid4_format`` (``:2596-2632``): 36 chars, hyphens at 8/13/18/23, '4' at 14, hex."""
    if len(nonce) != 36 or any(nonce[i] != "-" for i in (8, 13, 18, 23)) or nonce[14] != "4":
        return False
    return all(c in "0123456789abcdefABCDEF" for i, c in enumerate(nonce) if i not in (8, 13, 18, 23))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeNode
    body = b""

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        node = self.server
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        node.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        path = self.path.split("?")[0]
        if node.branch != "mainline" and path.startswith("/api") and path not in SKIP_PATHS:
            code = node.authenticate(self)
            if code is not None:
                self._answer(ERRORS[code][0], refusal_body(code, str(uuid.uuid4())))
                return
        route = getattr(self, f"_{node.branch}", None)
        if route is None or not route(self.command, path):
            self._answer(404)  # actix's default 404: no body

    do_GET = do_POST = do_DELETE = _serve

    # ----- routes, per branch -------------------------------------------------------------------
    def _mainline(self, method: str, path: str) -> bool:
        if (method, path) == ("GET", "/api/security/system-key"):  # security_routes.rs:53-70
            key = self.server.system_key
            if key is None:
                self._answer(404, {"success": False, "error": "System key not found"})
            else:
                self._answer(200, {"success": True, "key": key})
            return True
        return self._logs(method, path, stream=True)

    def _security(self, method: str, path: str) -> bool:
        return self._crypto(method, path) or self._rotation(method, path) or self._logs(method, path, stream=True)

    def _security2(self, method: str, path: str) -> bool:
        if method == "POST" and path in ("/api/crypto/keys/rotate/status", "/api/crypto/keys/rotate/history"):
            what = "status query is" if path.endswith("status") else "history is"  # key_rotation_routes.rs:96-127
            self._answer(501, api_error("not_implemented", f"Key rotation {what} not yet implemented"))
            return True
        return self._crypto(method, path) or self._logs(method, path, stream=False)

    def _logs(self, method: str, path: str, *, stream: bool) -> bool:
        if (method, path) == ("GET", "/api/logs"):
            self._answer(200, self.server.lines if stream else [])  # security2: logging::get_logs() is Vec::new()
            return True
        if (method, path) != ("GET", "/api/logs/stream"):
            return False
        if not stream:  # security2 routes/log_routes.rs:43-44
            self._answer(500, {"error": "Log streaming not available"})
            return True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for line in self.server.lines:  # log_routes.rs:30-41: "data: {line}\n\n", no ids
                data = f"data: {line}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            while not self.server.stopping.wait(0.05):
                pass
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        self.close_connection = True
        return True

    def _crypto(self, method: str, path: str) -> bool:
        node = self.server
        if (method, path) == ("POST", "/api/crypto/keys/register"):  # crypto_routes.rs:551-700
            req = json.loads(self.body or b"{}")
            try:
                key = bytes.fromhex(req.get("public_key", ""))
            except ValueError:
                key = b""
            if len(key) != 32:
                self._answer(400, api_error("INVALID_PUBLIC_KEY", "Ed25519 public key must be exactly 32 bytes"))
                return True
            client = req.get("client_id") or f"client_{uuid.uuid4()}"
            if client in node.registrations:
                self._answer(409, api_error("CLIENT_ALREADY_REGISTERED", "Client already has a registered public "
                                            "key. Use update endpoint to change keys."))  # fmt: skip
                return True
            if any(r["public_key"] == key.hex() for r in node.registrations.values()):
                self._answer(409, api_error("DUPLICATE_PUBLIC_KEY", "This public key is already registered by "
                                            "another client"))  # fmt: skip
                return True
            reg = {"registration_id": str(uuid.uuid4()), "client_id": client, "public_key": key.hex(),
                   "key_name": req.get("key_name"), "registered_at": chrono(datetime.now(UTC)), "status": "active",
                   "last_used": None}  # fmt: skip
            node.registrations[client] = reg
            self._answer(201, {"success": True, "data": {k: v for k, v in reg.items() if k != "last_used"}})
            return True
        if method == "GET" and path.startswith("/api/crypto/keys/status/"):  # crypto_routes.rs:719-790
            reg = node.registrations.get(unquote(path.rsplit("/", 1)[1]))
            if reg is None:
                self._answer(404, api_error("CLIENT_NOT_FOUND", "No public key registered for this client"))
            else:
                self._answer(200, {"success": True, "data": reg})
            return True
        return False

    def _rotation(self, method: str, path: str) -> bool:
        node = self.server
        if (method, path) == ("POST", "/api/crypto/keys/rotate/history"):  # key_rotation_routes.rs:390-470
            wanted = json.loads(self.body or b"{}").get("public_key", "")
            found = [r for r in node.rotations if wanted in (r["old_public_key"], r["new_public_key"])]
            entries = [{k: r[k] for k in ("correlation_id", "status", "old_public_key", "new_public_key", "reason",
                                          "started_at", "completed_at", "actor")} for r in found]  # fmt: skip
            self._answer(200, {"success": True, "data": {"public_key": wanted, "rotations": entries,
                                                         "total_count": len(entries)}})  # fmt: skip
            return True
        if (method, path) == ("POST", "/api/crypto/keys/rotate/status"):  # key_rotation_routes.rs:325-385
            wanted = json.loads(self.body or b"{}").get("correlation_id")
            for r in node.rotations:
                if r["correlation_id"] == wanted:
                    fields = ("correlation_id", "status", "old_public_key", "new_public_key", "reason", "started_at",
                              "completed_at", "associations_updated", "error_details")  # fmt: skip
                    self._answer(200, {"success": True, "data": {k: r[k] for k in fields}})
                    return True
            self._answer(404, api_error("ROTATION_NOT_FOUND", "No rotation record found for the given correlation ID"))
            return True
        return False


def public_key_info(public: bytes, owner: str = "admin", *, active: bool = True, expires: int | None = None) -> dict:
    """mainline ``PublicKeyInfo`` (``security/types.rs:47-64``) as ``register_system_public_key`` stores it."""
    return {"id": "SYSTEM_WIDE_PUBLIC_KEY", "public_key": base64.b64encode(public).decode(), "owner_id": owner,
            "created_at": 1_764_000_000, "expires_at": expires, "is_active": active, "permissions": ["read", "write"],
            "metadata": {}}  # fmt: skip


@contextmanager
def fake_node(branch: str = "security", **options: Any) -> Iterator[FakeNode]:
    node = FakeNode(branch, **options)
    thread = threading.Thread(target=node.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        node.stopping.set()
        node.shutdown()
        node.server_close()
