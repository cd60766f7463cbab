"""The signed revocation feed: what every enforcement point polls (docs/revocation-feed.md).

A C2SP signed note (https://c2sp.org/signed-note), signed by the journal's current signing key::

    <journal origin>/revocations
    version <V>
    since <S>
    <version> <state> <at> <key_id>      (one line per withdrawal with S < version <= V)

    — <key name> <base64(key id || Ed25519 signature)>

The first line is the feed's own origin, never the journal's: a checkpoint verifier checks that
the first line is the journal origin and that the second is a bare decimal size, so a feed note
can never pass as a checkpoint (nor a checkpoint as a feed), although one key signs both.

Thousands of pollers ask the same question (``since`` = the version they hold): a rendered answer
is kept per (signer, version, since, format), so a poll costs a dictionary look-up and a 304.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from keylife.journal import note
from keylife.journal.signing import Signer, Verifier
from keylife.registry import revocations as rv
from keylife.registry.queries import RegistryReader

FORMAT = "keylife-revocations/v1"
CACHE_SIZE = 256  # rendered answers kept: a few "since" values per version are what pollers ask


class FeedError(ValueError):
    """A ``since`` the feed cannot answer; ``kind`` is the problem type, the message says why."""

    def __init__(self, kind: str, message: str, version: int) -> None:
        super().__init__(message)
        self.kind, self.version = kind, version


def feed_origin(journal_origin: str) -> str:
    return f"{journal_origin}/revocations"


def parse_since(raw: str | None, version: int) -> int:
    """``?since=``: a decimal integer from 0 to the current version (a consumer never holds more)."""
    if raw is None or raw == "":
        return 0
    if not raw.isdigit() or not raw.isascii():
        raise FeedError("invalid-since", f"since={raw[:40]!r} is not a version (a non-negative integer)", version)
    since = int(raw)
    if since > version:
        raise FeedError(
            "since-ahead",
            f"since={since} is beyond the feed's current version {version}: this feed never published it "
            "(another keylife, or a registry rebuilt from another journal?); poll again from since=0",
            version,
        )
    return since


def note_text(origin: str, version: int, since: int, entries: list[dict[str, Any]]) -> str:
    lines = [origin, f"version {version}", f"since {since}"]
    lines += [f"{e['version']} {e['state']} {e['at']} {e['key_id']}" for e in entries]
    return "\n".join(lines) + "\n"


def render(signer: Signer, origin: str, version: int, since: int, entries: list[dict[str, Any]]) -> tuple[str, bytes]:
    """(the signed note, the JSON document embedding it)."""
    signed = note.sign_text(note_text(origin, version, since, entries), signer)
    document = {"format": FORMAT, "origin": origin, "version": version, "since": since, "entries": entries,
                "note": signed}  # fmt: skip
    return signed, orjson.dumps(document)


def etag(version: int, since: int, json: bool) -> str:
    return f'"rev-{version}-{since}{"-json" if json else ""}"'


@dataclass(frozen=True)
class Answer:
    version: int
    since: int
    etag: str
    body: bytes
    media_type: str


class Feed:
    """The feed over a registry: current version, deltas, rendered answers cached per version."""

    def __init__(self, registry: RegistryReader, journal_origin: str) -> None:
        self.registry = registry
        self.origin = feed_origin(journal_origin)
        self._cache: OrderedDict[tuple[bytes, int, int, bool], Answer] = OrderedDict()
        self._lock = threading.Lock()

    def version(self) -> int:
        return rv.feed_version(self.registry._reader())

    def answer(self, signer: Signer, raw_since: str | None, json: bool) -> Answer:
        """The answer for ``?since=raw_since`` (FeedError for a bad one); rendered once per version."""
        version = self.version()
        since = parse_since(raw_since, version)
        key = (signer.verifier.key_id, version, since, json)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        entries = rv.feed_entries(self.registry._reader(), since, version)
        signed, document = render(signer, self.origin, version, since, entries)
        body, media = (document, "application/json") if json else (signed.encode(), "text/plain; charset=utf-8")
        answer = Answer(version, since, etag(version, since, json), body, media)
        with self._lock:
            self._cache[key] = answer
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return answer


@dataclass(frozen=True)
class Verified:
    origin: str
    version: int
    since: int
    entries: list[dict[str, Any]]


def verify(text: str, verifiers: list[Verifier], origin: str | None = None) -> Verified:
    """Check a feed note (or the JSON document embedding one) and read its signed text only.

    ``origin``: the feed origin expected (``<journal origin>/revocations``); None accepts any that
    ends in ``/revocations``. Raises ``ValueError`` naming what failed.
    """
    if text.lstrip().startswith("{"):
        try:
            text = orjson.loads(text)["note"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"a JSON feed document must hold the signed note in 'note' ({exc})") from None
    body, signatures = note.split_note(text)
    problem = note.check_text(body, signatures, verifiers)
    if problem is not None:
        raise ValueError(f"the feed note's signature does not verify: {problem}")
    lines = body.split("\n")[:-1]
    if len(lines) < 3 or not lines[1].startswith("version ") or not lines[2].startswith("since "):
        raise ValueError("not a revocation feed note (origin, version and since lines expected)")
    if (origin is not None and lines[0] != origin) or not lines[0].endswith("/revocations"):
        raise ValueError(f"the note's origin {lines[0]!r} is not the feed origin {origin or '*/revocations'!r}")
    entries = []
    for line in lines[3:]:
        version, state, at, key_id = line.split(" ", 3)
        entries.append({"version": int(version), "state": state, "at": at, "key_id": key_id})
    return Verified(lines[0], int(lines[1][8:]), int(lines[2][6:]), entries)
