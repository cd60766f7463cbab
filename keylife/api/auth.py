"""Bearer tokens with scopes. Only SHA-256 hashes of tokens are stored (in the config).

Tokens are 256-bit random strings, so a plain SHA-256 is the right hash: there is nothing to
brute-force that a slow hash would protect. A failed authentication is answered 401 (no or
unknown token) or 403 (wrong scope) and journaled as a security event, at most
``rate`` per second with a burst; what the limit holds back is counted, never lost silently.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from keylife.common.scopes import effective_scopes, role_for
from keylife.config import SCOPES, Token

TOKEN_PREFIX = "kl_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]
    role: str | None = None

    def lacks(self, scope: str) -> str | None:
        """Why this principal may not use ``scope`` (naming the role that may), or None."""
        if scope in self.scopes:
            return None
        held = f" (role {self.role})" if self.role else ""
        needed = role_for(scope)
        ask = f"; the {needed} role has it" if needed else ""
        return f"token '{self.name}'{held} lacks the '{scope}' scope{ask}"


class TokenStore:
    def __init__(self, tokens: list[Token]) -> None:
        self._by_hash = {t.sha256: Principal(t.name, effective_scopes(t.role, t.scopes), t.role) for t in tokens}

    def __len__(self) -> int:
        return len(self._by_hash)

    def authenticate(self, authorization: str | None) -> tuple[Principal | None, str]:
        """(principal, why-not). The token itself never appears in the reason."""
        if not authorization:
            return None, "no Authorization header"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, "Authorization must be 'Bearer <token>'"
        principal = self._by_hash.get(hash_token(token.strip()))
        if principal is None:
            return None, "unknown or revoked token"
        return principal, ""


class RateLimiter:
    """Token bucket; ``suppressed`` counts what it refused since the last allowed event."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self._level = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()
        self.suppressed = 0
        self.suppressed_total = 0

    def allow(self) -> tuple[bool, int]:
        """(allowed, how many were suppressed before this one, when allowed)."""
        with self._lock:
            now = time.monotonic()
            self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._level >= 1:
                self._level -= 1
                held, self.suppressed = self.suppressed, 0
                return True, held
            self.suppressed += 1
            self.suppressed_total += 1
            return False, 0


def all_scopes() -> list[str]:
    return list(SCOPES)
