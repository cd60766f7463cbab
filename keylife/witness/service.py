"""The witness's add-checkpoint decision, without HTTP: C2SP tlog-witness *add-checkpoint*, in its order.

1. malformed body -> 400 (``protocol.parse_request`` says where);
2. origin not configured -> 404;
3. no signature from a key configured for that origin verifies -> 403 (unknown keys are ignored);
   then an old size larger than the checkpoint's -> 400;
4. old size != the size of the latest checkpoint cosigned for the origin -> 409, body = that size
   (``text/x.tlog.size``): a rollback, or a log that lost track;
5. old size == checkpoint size with a different root hash -> 409: a fork (split view);
6. the RFC 6962 consistency proof from (old size, stored root) to the new checkpoint fails -> 422
   (also a fork: the log rewrote entries the witness had seen);
   Refusals 5 and 6 keep the validly signed checkpoint in ``state.evidence``: proof the log misbehaved.
7. else the record is advanced by compare-and-swap (``state.advance``), committed, and the
   witness answers 200 with its cosignature line (C2SP tlog-cosignature v1).

Every refusal is one log line naming the log and the reason. The check-then-store race the spec
warns about is closed by re-checking inside the transaction: a lost race is answered 409.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from keylife.journal import merkle
from keylife.journal.cosignature import Cosigner
from keylife.journal.note import Checkpoint
from keylife.journal.signing import Verifier
from keylife.witness.protocol import SIZE_CONTENT_TYPE, BadRequest, check_sizes, parse_request
from keylife.witness.state import WitnessState

log = logging.getLogger("keylife.witness")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


@dataclass
class WitnessMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "keylife_witness_add_checkpoint",
            "add-checkpoint requests answered, by log origin and result.",
            ["origin", "result"],
            registry=self.registry,
        )
        self.size = Gauge(
            "keylife_witness_log_size", "Size of the latest checkpoint cosigned, by log origin.", ["origin"],
            registry=self.registry,
        )  # fmt: skip


class Witness:
    def __init__(
        self, cosigner: Cosigner, logs: dict[str, list[Verifier]], state: WitnessState, metrics: WitnessMetrics
    ) -> None:
        self.cosigner = cosigner
        self.logs = logs
        self.state = state
        self.metrics = metrics
        for origin, latest in state.all().items():
            if origin in logs:
                metrics.size.labels(origin).set(latest.size)

    def add_checkpoint(self, body: bytes) -> Reply:
        try:
            request = parse_request(body)
        except BadRequest as exc:
            return self._refuse(400, "malformed", "?", f"malformed request: {exc}")
        cp = request.checkpoint
        keys = self.logs.get(cp.origin)
        if keys is None:
            return self._refuse(404, "unknown_log", cp.origin, "this witness does not witness that origin")
        if not _log_signed(cp, keys):
            return self._refuse(
                403, "bad_signature", cp.origin, f"no valid signature by the log's key (size {cp.size})"
            )
        try:
            check_sizes(request)
        except BadRequest as exc:
            return self._refuse(400, "malformed", cp.origin, f"malformed request: {exc}")
        stored = self.state.latest(cp.origin)
        refusal = self._check(request.old, request.proof, cp, stored)
        if refusal is not None:
            return refusal
        lost = self.state.advance(cp.origin, stored, cp.size, cp.hash, cp.render(), time.time())
        if lost is not None:  # a concurrent request moved the record between our check and our write
            return self._conflict(cp, lost.size, f"old size {request.old} was overtaken by a concurrent update")
        self.metrics.requests.labels(cp.origin, "cosigned").inc()
        self.metrics.size.labels(cp.origin).set(cp.size)
        return Reply(200, self.cosigner.line(cp.text).encode())

    def latest_cosigned(self, origin: str) -> str | None:
        """The latest checkpoint of ``origin`` with a cosignature made now: as of now it is still the
        largest consistent checkpoint this witness saw, which is what a cosignature states."""
        if origin not in self.logs:
            return None
        latest = self.state.latest(origin)
        if not latest.note:
            return None
        body = latest.note.partition("\n\n")[0] + "\n"
        return latest.note + self.cosigner.line(body)

    def _check(self, old: int, proof: list[bytes], cp: Checkpoint, stored) -> Reply | None:
        if old != stored.size:
            why = "rollback" if cp.size < stored.size else "wrong old size"
            return self._conflict(cp, stored.size, f"{why}: old size {old}, the witness holds size {stored.size}")
        if old == cp.size and stored.hash is not None and stored.hash != cp.hash:
            self.state.keep_evidence(cp.origin, 409, "fork", cp.render(), time.time())
            return self._refuse(
                409, "fork", cp.origin,
                f"fork: a different root hash for size {cp.size} than the one cosigned",
                body=f"{stored.size}\n".encode(), content_type=SIZE_CONTENT_TYPE,
            )  # fmt: skip
        try:
            if old == 0:
                if proof:
                    raise merkle.ProofError("the proof must be empty when the old size is 0")
            else:
                merkle.verify_consistency(old, cp.size, stored.hash or b"", cp.hash, proof)
        except merkle.ProofError as exc:
            self.state.keep_evidence(cp.origin, 422, f"from size {old}: {exc}", cp.render(), time.time())
            return self._refuse(
                422, "bad_proof", cp.origin, f"consistency from size {old} to {cp.size} does not verify: {exc}"
            )
        return None

    def _conflict(self, cp: Checkpoint, size: int, why: str) -> Reply:
        return self._refuse(409, "conflict", cp.origin, why, body=f"{size}\n".encode(), content_type=SIZE_CONTENT_TYPE)

    def _refuse(
        self, status: int, result: str, origin: str, why: str, *, body: bytes | None = None, content_type: str = ""
    ) -> Reply:
        log.warning("refused checkpoint (%d) from log %r: %s", status, origin, why)
        label = origin if origin in self.logs else "unknown"  # a label per unknown origin would grow unbounded
        self.metrics.requests.labels(label, result).inc()
        if body is None:
            return Reply(status, (why + "\n").encode())
        return Reply(status, body, content_type)


def _log_signed(cp: Checkpoint, keys: list[Verifier]) -> bool:
    """Whether any signature by a configured key verifies; signatures by unknown keys are ignored."""
    known = {(k.name, k.key_id): k for k in keys}
    for sig in cp.signatures:
        key = known.get((sig.name, sig.key_id))
        if key is not None and key.verify(sig.signature, cp.text.encode()):
            return True
    return False
