"""API token scopes and the roles that bundle them: constants the ``keylife`` command needs at
start-up, kept apart from the config models so that commands which load no config (``verify``,
``journal``) do not import pydantic's config machinery just to build their help text.

A token carries a role, scopes, or both; what it may do is the union. Each route asks for one
scope, and a 403 names the smallest role that has it (``role_for``), so the person refused knows
whom to ask. ``admin`` is the first release's all-commands scope: it still implies every scope a
security administrator has, so existing tokens keep working.
"""

from __future__ import annotations

SCOPES = (
    "ingest",  # POST /v1/events
    "read",  # the registry, checkpoints, proofs, the revocation feed, incidents
    "admin",  # legacy: implies ADMIN_IMPLIES
    "forward",  # journal quarantine notices (keylife forward)
    "audit",  # reports, incident exports, proof bundles: evidence, nothing that changes state
    "suspend",  # suspend, reactivate one key
    "lifecycle",  # activate, deactivate one key
    "revoke",  # revoke, compromise one key
    "destroy",  # destroy one key (dual control)
    "lockdown",  # suspend every key a selector matches
    "release",  # reactivate what a lockdown suspended
    "bulk",  # bulk plans (dual control over a configured size)
    "incident",  # open, note, assign, resolve, close incidents
    "approve",  # be the second person of a dual-control operation
    "alerts",  # Alertmanager's webhook (POST /v1/alertmanager/webhook)
)

# Roles in order of power: ``role_for`` names the first that has a scope.
ROLES: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "auditor": frozenset({"read", "audit"}),
    "operator": frozenset({"read", "suspend", "lockdown", "incident"}),
    "security-admin": frozenset(
        {
            "read",
            "audit",
            "suspend",
            "lifecycle",
            "revoke",
            "destroy",
            "lockdown",
            "release",
            "bulk",
            "incident",
            "approve",
        }
    ),
}
ADMIN_IMPLIES = ROLES["security-admin"]

# The scope each key command needs (POST /v1/keys/{id}/commands and bulk actions).
COMMAND_SCOPES: dict[str, str] = {
    "activate": "lifecycle",
    "deactivate": "lifecycle",
    "suspend": "suspend",
    "reactivate": "suspend",
    "revoke": "revoke",
    "compromise": "revoke",
    "destroy": "destroy",
}


def effective_scopes(role: str | None, scopes: list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    """What a token may do: its role's scopes, its own, and what ``admin`` implies."""
    granted = set(scopes) | (ROLES[role] if role else set())
    if "admin" in granted:
        granted |= ADMIN_IMPLIES
    return frozenset(granted)


def role_for(scope: str) -> str | None:
    """The least powerful role holding ``scope`` (None for ``ingest``, ``forward``, ``alerts``: machine scopes)."""
    for role, scopes in ROLES.items():
        if scope in scopes:
            return role
    return None
