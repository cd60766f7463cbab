"""keylife as a signed DataFold client: RFC 9421 HTTP message signatures on every node request.

On ``security`` and ``security2`` the node wraps the whole ``/api`` scope in its signature
middleware (``security`` ``src/datafold_node/http_server.rs:137-142``; ``security2``
``routes/http_server.rs:139-143``); only ``/api/system/status``, ``/api/crypto/keys/register``,
``/`` and ``/index.html`` are exempt (``security`` ``signature_auth.rs:3421-3433``, ``security2``
``auth/auth_middleware.rs:758-770``). An unsigned request is answered 400 ``MISSING_HEADERS`` and
logged as a SECURITY_EVENT on the node, every time.

What the node demands (``security`` ``signature_auth.rs``; ``security2`` has the same code split
over ``auth/``): ``Signature-Input`` and ``Signature`` headers (``:3035-3050``), params ``created``
(Unix seconds), ``keyid``, ``alg`` = ``"ed25519"`` and ``nonce`` (``:3052-3082``), a UUID v4 nonce
(``require_uuid4_nonces``, ``:2596-2632``) never seen within ``nonce_ttl_secs`` = 300 (``:2114-2165``),
``created`` within 300 + 30 s in the past and 60 s in the future (``:2053-2111``), and the covered
components ``@method``, ``@target-uri``, ``content-type``, ``content-digest``
(``required_signature_components``, ``:731-736``, checked at ``:2168-2186``). It does *not* verify
the signature (``verify_signature_against_database`` is only reached from dead code, ``:3371``).

What keylife sends is what DataFold's own Python SDK sends (``python-sdk/.../signing/
canonical_message.py`` ``build_signature_input``: ``sig1=(...);created=..;keyid="..";alg="ed25519";
nonce=".."``), built by the ``http-message-signatures`` library to RFC 9421 itself: the signature
base of section 2.5, ``@target-uri`` as the absolute URI (2.2.2), ``Content-Digest`` of the (empty)
body per RFC 9530, the signature as a byte sequence (4.2). A GET has no body, but the node requires
``content-type`` and ``content-digest`` to be covered, so keylife sends both (``application/json``
and the SHA-256 of the empty body), as DataFold's CLI does for GETs (``security`` ``src/cli/auth.rs:221-247``).

The key: keylife's own Ed25519 client key, in a 0600 file (``secret_files``), registered once per
node through the exempt ``POST /api/crypto/keys/register`` (``crypto_routes.rs:551-700``: hex
public key; 201 ``PublicKeyRegistrationResponse``, 409 ``CLIENT_ALREADY_REGISTERED`` /
``DUPLICATE_PUBLIC_KEY``, 400 ``INVALID_PUBLIC_KEY``). ``keyid`` is the client id, as the node reads it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms

from keylife.common.secret_files import create_secret_file, read_secret_file

log = logging.getLogger("keylife.datafold.signing")

SignMode = Literal["auto", "always", "never"]
COVERED = ("@method", "@target-uri", "content-type", "content-digest")  # the node's required components
REGISTER_PATH = "/api/crypto/keys/register"
LABEL = "sig1"  # DataFold's clients' label; the node reads whatever precedes the first "="


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """keylife's client key: read from ``path`` (owner-only, or refused), or made and written 0600."""
    path = Path(path)
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
        try:
            create_secret_file(path, pem)
            log.info("made keylife's DataFold client key", extra={"path": str(path)})
            return key
        except FileExistsError:
            pass  # another source made it first: read theirs
    loaded = serialization.load_pem_private_key(read_secret_file(path, "DataFold client key"), None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"DataFold client key {path} is not an Ed25519 private key")
    return loaded


def public_hex(key: Ed25519PrivateKey) -> str:
    """The 32-byte public key as hex: the form the register endpoint takes."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def refusal_code(response: httpx.Response) -> str | None:
    """The middleware's ``error_code`` when ``response`` is its refusal (``{"error": true,
    "error_code", "message", "correlation_id"}``, ``security`` ``signature_auth.rs:3217-3233``)."""
    if response.status_code < 400 or response.status_code == 404:
        return None
    try:
        body = orjson.loads(response.read()[:65536])
    except (orjson.JSONDecodeError, httpx.HTTPError):
        return None
    if isinstance(body, dict) and body.get("error") is True and isinstance(body.get("error_code"), str):
        return body["error_code"][:64]
    return None


class _OneKey(HTTPSignatureKeyResolver):
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        return self.key

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey:
        return self.key.public_key()


@dataclass
class _Message:
    """The view of a request the signer reads and writes (method, absolute URL, live headers)."""

    method: str
    url: str
    headers: httpx.Headers


class NodeAuth(httpx.Auth):
    """Signs a source's requests to one node, registers the client key, and tracks refusals.

    ``mode``: ``always`` signs every request; ``never`` none; ``auto`` sends unsigned until the node
    answers 400 ``MISSING_HEADERS``, then registers, sends that request again signed, and signs every
    later one. ``refusal`` is the middleware's last error code while the node keeps refusing (None
    once it accepts again); each change of it is logged once, never each retry.
    """

    def __init__(self, key_path: Path, client_id: str, mode: SignMode = "auto", *, key_name: str = "keylife") -> None:
        self.key_path, self.client_id, self.mode, self.key_name = Path(key_path), client_id, mode, key_name
        self.signing = mode == "always"
        self._key: Ed25519PrivateKey | None = None
        self._signer: HTTPMessageSigner | None = None
        self.marker = self.key_path.with_name(self.key_path.name + ".registered.json")
        self.registered: dict[str, str] = _load_marker(self.marker)  # node origin -> registration id / how
        self.refusal: str | None = None
        self.stats = {"signed": 0, "refusals": 0, "registrations": 0, "registration_failures": 0}
        self._lock = threading.Lock()

    # ----- the key and the signature ----------------------------------------------------------
    @property
    def key(self) -> Ed25519PrivateKey:
        if self._key is None:
            self._key = load_or_create_key(self.key_path)
            self._signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_OneKey(self._key))
        return self._key

    def sign(self, request: httpx.Request) -> None:
        """RFC 9421 signature over ``COVERED`` with ``created``, ``keyid``, ``alg``, ``nonce`` (UUID v4)."""
        self.key  # noqa: B018 (loads the key and the signer)
        assert self._signer is not None
        if "content-type" not in request.headers:
            request.headers["Content-Type"] = "application/json"
        for name in ("signature", "signature-input", "content-digest"):
            request.headers.pop(name, None)
        body = request.read()
        self._signer.sign(_Message(request.method, str(request.url), request.headers), key_id=self.client_id,
                          nonce=str(uuid.uuid4()), label=LABEL, covered_component_ids=COVERED, body=body)  # fmt: skip
        self.stats["signed"] += 1

    # ----- httpx.Auth -------------------------------------------------------------------------
    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.signing:
            yield from self._ensure_registered(request)
            self.sign(request)
        response = yield request
        code = refusal_code(response) if response.status_code >= 400 else None
        if code == "MISSING_HEADERS" and self.mode == "auto" and not self.signing:
            log.warning(
                "the DataFold node requires signed requests (400 MISSING_HEADERS); keylife signs from now on",
                extra={"node": _origin(request.url), "client_id": self.client_id},
            )
            self.signing = True
            yield from self._ensure_registered(request)
            self.sign(request)
            response = yield request
            code = refusal_code(response) if response.status_code >= 400 else None
        self._observe(request, code)

    def _observe(self, request: httpx.Request, code: str | None) -> None:
        with self._lock:
            before, self.refusal = self.refusal, code
            if code is not None:
                self.stats["refusals"] += 1
        if code == "PUBLIC_KEY_LOOKUP_FAILED":  # the node lost keylife's key (a node that verifies): register again
            self.registered.pop(_origin(request.url), None)
        if code is not None and code != before:
            hint = " (signing is off for this source: set sign to auto or always)" if not self.signing else ""
            log.error(
                f"the DataFold node refuses keylife's requests: {code}{hint}",
                extra={"node": _origin(request.url), "path": request.url.path, "client_id": self.client_id},
            )
        elif code is None and before is not None:
            log.info("the DataFold node accepts keylife's requests again", extra={"node": _origin(request.url)})

    def _ensure_registered(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Register the client key with this node once (the endpoint is exempt from signing). The
        node does not verify signatures today, so a failed registration is logged, not fatal."""
        origin = _origin(request.url)
        if origin in self.registered:
            return
        body = {"client_id": self.client_id, "public_key": public_hex(self.key), "key_name": self.key_name,
                "metadata": {"registered_by": "keylife"}}  # fmt: skip
        answer = yield httpx.Request("POST", origin + REGISTER_PATH, json=body)
        answer.read()
        how = _registration(answer)
        if how is None:
            self.stats["registration_failures"] += 1
            self.registered[origin] = "failed"  # asked once per process; the next start asks again
            log.warning(
                "could not register keylife's client key with the DataFold node; requests are signed anyway",
                extra={"node": origin, "status": answer.status_code, "answer": answer.text[:300]},
            )
            return
        self.stats["registrations"] += 1
        self.registered[origin] = how
        _save_marker(self.marker, {k: v for k, v in self.registered.items() if v != "failed"})
        log.info("keylife's client key is registered with the DataFold node",
                 extra={"node": origin, "client_id": self.client_id, "registration": how})  # fmt: skip


def _registration(answer: httpx.Response) -> str | None:
    """How the register endpoint answered: the registration id (201), "already registered" (409
    ``CLIENT_ALREADY_REGISTERED``: this client id has a key there, kept), or None (anything else)."""
    try:
        body: Any = orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    if answer.status_code in (200, 201) and body.get("success") is True and isinstance(body.get("data"), dict):
        return str(body["data"].get("registration_id", "registered"))
    error = body.get("error")
    if answer.status_code == 409 and isinstance(error, dict) and error.get("code") == "CLIENT_ALREADY_REGISTERED":
        return "already registered"
    return None


def _load_marker(path: Path) -> dict[str, str]:
    """Nodes this key is registered with, so a restart does not register again (each repeat is a
    409 and an ERROR line on the node, security crypto_routes.rs:703)."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save_marker(path: Path, registered: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(orjson.dumps(registered, option=orjson.OPT_SORT_KEYS))
        tmp.replace(path)
    except OSError as exc:  # only costs a second registration after a restart
        log.warning("could not record the registration", extra={"path": str(path), "error": str(exc)})


def _origin(url: httpx.URL) -> str:
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"
