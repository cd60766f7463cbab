"""Key lifecycle: the states and the one transition table everything else consults.

States follow NIST SP 800-57 Part 1 Rev. 5 section 7 (pre-activation, active, suspended,
deactivated, compromised, destroyed) plus ``revoked`` for administrative withdrawal.
The table is written once, here; ``docs/lifecycle.md`` renders it (``render_markdown``).

Two kinds of input meet the table differently:

* a *command* (an administrator asks to revoke, suspend, ...) that the table does not allow
  is refused before anything is journaled, except the refusal itself;
* an *observation* (a node reports what happened in the field) is never refused. It is
  journaled, and a conflict becomes a violation the registry counts. A node cannot bring a
  key back from ``revoked``, ``compromised`` or ``destroyed``: such a report is recorded as a
  violation and the state stays where it was.
"""

from __future__ import annotations

from enum import StrEnum


class KeyState(StrEnum):
    PRE_ACTIVATION = "pre_activation"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DEACTIVATED = "deactivated"
    REVOKED = "revoked"
    COMPROMISED = "compromised"
    DESTROYED = "destroyed"


S = KeyState

# Event types that move a key, and the state they move it to.
TARGET_STATE: dict[str, KeyState] = {
    "generated": S.PRE_ACTIVATION,
    "activated": S.ACTIVE,
    "suspended": S.SUSPENDED,
    "reactivated": S.ACTIVE,
    "deactivated": S.DEACTIVATED,
    "expired": S.DEACTIVATED,
    "rotated": S.DEACTIVATED,  # the old key; the successor becomes active
    "revoked": S.REVOKED,
    "compromised": S.COMPROMISED,
    "destroyed": S.DESTROYED,
}

# (from state, event type) pairs the lifecycle allows. ``None`` is "no such key yet".
ALLOWED: dict[KeyState | None, frozenset[str]] = {
    None: frozenset({"generated"}),
    S.PRE_ACTIVATION: frozenset({"activated", "compromised", "revoked", "destroyed"}),
    S.ACTIVE: frozenset({"suspended", "deactivated", "expired", "rotated", "revoked", "compromised"}),
    S.SUSPENDED: frozenset({"reactivated", "deactivated", "expired", "revoked", "compromised"}),
    S.DEACTIVATED: frozenset({"revoked", "compromised", "destroyed"}),
    S.REVOKED: frozenset({"compromised", "destroyed"}),
    S.COMPROMISED: frozenset({"destroyed"}),
    S.DESTROYED: frozenset(),
}

# States a node report can never lead out of into a usable state.
SEALED_STATES = frozenset({S.REVOKED, S.COMPROMISED, S.DESTROYED})
USABLE_STATES = frozenset({S.PRE_ACTIVATION, S.ACTIVE, S.SUSPENDED})

# Use of a key in these states conflicts with the lifecycle (NIST: no use before activation,
# none while suspended, none after revocation, compromise or destruction).
NO_USE_STATES = frozenset({S.PRE_ACTIVATION, S.SUSPENDED, S.REVOKED, S.COMPROMISED, S.DESTROYED})
# A deactivated key may still process (decrypt, verify, unwrap) but must not protect.
PROTECT_OPERATIONS = frozenset({"encrypt", "sign", "wrap", "derive", "mac_generate"})


def is_allowed(current: KeyState | None, event_type: str) -> bool:
    return event_type in ALLOWED[current]


def refusal_reason(current: KeyState | None, event_type: str) -> str:
    """Why a command is refused, in words an administrator can act on."""
    if current is None:
        return f"key does not exist; '{event_type}' needs an existing key"
    allowed = sorted(ALLOWED[current])
    options = ", ".join(allowed) if allowed else "nothing (terminal state)"
    return f"key is {current.value}; '{event_type}' is not allowed from there (allowed: {options})"


# A key keylife has seen only in use, in a propagation or in a security event has a registry row
# but no state (it was never reported generated). It may still be withdrawn: an operator who
# learns that an unregistered client key leaked must be able to revoke it.
UNTRACKED_COMMANDS = frozenset({"revoked", "compromised"})


def command_allowed(current: KeyState | None, exists: bool, event_type: str) -> bool:
    """Whether a command may move a key: the table, plus withdrawal of a seen, untracked key."""
    if current is None and exists:
        return event_type in UNTRACKED_COMMANDS
    return is_allowed(current, event_type)


def command_refusal(current: KeyState | None, exists: bool, event_type: str) -> str:
    """Why ``command_allowed`` said no."""
    if current is None and exists:
        options = ", ".join(sorted(UNTRACKED_COMMANDS))
        return (
            f"key was seen (in use or in an event) but never reported generated; '{event_type}' needs a "
            f"tracked key (allowed here: {options})"
        )
    return refusal_reason(current, event_type)


def observed_state(current: KeyState | None, event_type: str) -> tuple[KeyState | None, str | None]:
    """The state after an observation and the violation it raises, if any.

    Returns ``(new_state, violation_kind)``; ``new_state`` is ``current`` when the report may
    not move the key (a sealed state would become usable again).
    """
    target = TARGET_STATE[event_type]
    if is_allowed(current, event_type) or current == target:
        return target, None
    if current in SEALED_STATES and target in USABLE_STATES:
        return current, "skipped_transition"
    return target, "skipped_transition"


def use_conflicts(current: KeyState | None, operations: dict[str, int]) -> bool:
    """True when usage of a key in ``current`` state breaks the lifecycle."""
    if current is None:
        return False
    if current in NO_USE_STATES:
        return any(count > 0 for count in operations.values())
    if current == S.DEACTIVATED:
        return any(count > 0 and op in PROTECT_OPERATIONS for op, count in operations.items())
    return False


def render_markdown() -> str:
    """The transition table as Markdown, for docs/lifecycle.md (kept in step by a test)."""
    lines = [
        "| from \\ event | " + " | ".join(TARGET_STATE) + " |",
        "|---|" + "---|" * len(TARGET_STATE),
    ]
    for state in [None, *KeyState]:
        name = "(new key)" if state is None else state.value
        cells = [TARGET_STATE[t].value if t in ALLOWED[state] else "·" for t in TARGET_STATE]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
