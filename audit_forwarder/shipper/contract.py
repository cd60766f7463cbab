"""What the shipper hands a sink and what a sink answers: the contract every sink implements.

Guarantee split (after Vector's delivery docs): the shipper owns ordering, the durable cursor,
batching, retries and quarantine; a sink owns only its wire format and the meaning of "the
destination acknowledged this batch". ``Sink.send`` returning normally *is* that acknowledgement:
the shipper then advances the cursor past every record of the batch. A sink must therefore
return only once the destination confirmed (HTTP 2xx, Splunk indexer ack, the peer's TCP stack
having ACKed every byte), and raise otherwise:

* ``Retryable``: the destination could not take the batch now (connection refused or reset,
  timeout, TLS failure, HTTP 429 or 5xx). The shipper resends the same batch after a backoff,
  honouring ``retry_after`` when the destination gave one. Nothing moves on meanwhile.
* ``Rejected``: the destination refused the batch and will refuse it again (HTTP 400, 413, ...).
  With ``index`` set, that record is the refused one; without it the shipper splits the batch to
  find the record(s) at fault. A single refused record goes to the sink's quarantine.
* ``Refused`` from ``prepare``: the sink knows without sending that a record can never be
  delivered (a line over the destination's size limit, a timestamp the destination refuses as
  too old). It goes to quarantine at once.

The ``reason`` of each error is a short, fixed label (metric label values stay bounded); the
message is for people and must never hold secrets (tokens, private keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from keylife.common.canonical import canonical
from keylife.journal.reader import Entry

CHECKPOINT_TYPE = "checkpoint"

# Bounded values for the ``reason`` label of keylife_forward_failures_total / _quarantined_total.
REASONS = (
    "connect",  # refused, reset, DNS, unreachable
    "timeout",
    "tls",  # handshake, certificate verification, peer alert (mTLS refused)
    "http_429",
    "http_5xx",
    "http_4xx",
    "protocol",  # an answer that does not follow the destination's protocol
    "too_large",  # a record over the destination's limit
    "too_old",  # a timestamp the destination refuses as too old
    "invalid",  # the destination said the record is invalid
    "auth",  # 401/403: credentials refused
    "io",  # local I/O (the file sink's disk)
)


@dataclass(slots=True)  # immutable by convention; frozen dataclasses cost 3x to build
class Record:
    """One record to ship: a journal entry, or a signed checkpoint published alongside them.

    ``entry.hash`` is the chain hash *after* this entry (what a checkpoint of size seq+1 signs).
    ``checkpoint`` is the size of the first signed checkpoint that covers the entry when the
    shipper read it, ``None`` when none did yet: the checkpoint record that follows later in
    the same stream covers it.

    A checkpoint record is an ``Entry`` too, so every format renders it without special cases:
    ``event = {"type": "checkpoint", "origin", "size", "root_hash", "note"}`` (the signed note,
    C2SP tlog-checkpoint), ``seq = size - 1`` (the last entry it covers), ``hash`` = its root
    hash, ``checkpoint = size``.
    """

    entry: Entry
    checkpoint: int | None
    event_json: bytes | None = None  # canonical JSON of ``entry.event`` when the reader had it

    @property
    def seq(self) -> int:
        return self.entry.seq

    @property
    def is_checkpoint(self) -> bool:
        return self.entry.event.get("type") == CHECKPOINT_TYPE

    def event_bytes(self) -> bytes:
        """The event's canonical JSON (RFC 8785): sliced from the journal line, not re-encoded."""
        return self.event_json if self.event_json is not None else canonical(self.entry.event)


@dataclass(slots=True)
class Prepared:
    """A record in a sink's wire form; ``size`` is what it adds to a batch (bytes)."""

    record: Record
    payload: Any
    size: int


class DeliveryError(Exception):
    def __init__(self, reason: str, message: str, *, retry_after: float | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown delivery failure reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class Retryable(DeliveryError):
    """Try the same batch again later (after ``retry_after`` seconds when the destination said so)."""


class Rejected(DeliveryError):
    """The destination refused the batch for good; ``index`` names the record when it is known."""

    def __init__(self, reason: str, message: str, *, index: int | None = None) -> None:
        super().__init__(reason, message)
        self.index = index


class Refused(Exception):
    """``prepare`` knows the record can never be delivered to this destination."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(message)
        self.reason = reason


class Sink(Protocol):
    """A destination. One shipper thread drives one sink; a sink need not be thread-safe."""

    name: str

    def prepare(self, record: Record) -> Prepared:
        """The record in wire form, or ``Refused``. Pure: no I/O."""
        ...

    def send(self, batch: list[Prepared]) -> None:
        """Deliver the batch in order; return only when the destination acknowledged all of it."""
        ...

    def close(self) -> None: ...
