"""A witness in a thread of the test (real HTTP on a loopback port) and logs to feed it."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from keylife.journal import merkle
from keylife.journal.cosignature import Cosigner
from keylife.journal.note import Checkpoint, sign_checkpoint
from keylife.journal.signing import Signer
from keylife.witness.protocol import render_request
from keylife.witness.server import WitnessHTTPServer
from keylife.witness.service import Witness, WitnessMetrics
from keylife.witness.state import WitnessState

ORIGIN = "test.keylife/witnessed"


@dataclass
class FakeLog:
    """An RFC 6962 log in memory: leaves, signed checkpoints, consistency proofs."""

    signer: Signer
    leaves: list[bytes] = field(default_factory=list)

    def grow(self, count: int, tag: str = "") -> None:
        start = len(self.leaves)
        self.leaves += [merkle.leaf_hash(f"entry {n}{tag}".encode()) for n in range(start, start + count)]

    def checkpoint(self, size: int | None = None) -> Checkpoint:
        size = len(self.leaves) if size is None else size
        return sign_checkpoint(self.signer, self.signer.name, size, merkle.root_of(self.leaves[:size]))

    def proof(self, old: int, new: int) -> list[bytes]:
        return merkle.consistency_proof(old, new, merkle.subtree_of(self.leaves))

    def request(self, old: int, size: int | None = None) -> bytes:
        size = len(self.leaves) if size is None else size
        proof = self.proof(old, size) if 0 < old < size else []
        return render_request(old, proof, self.checkpoint(size).render())


@dataclass
class RunningWitness:
    url: str
    witness: Witness
    cosigner: Cosigner
    state_path: Path


@contextmanager
def running_witness(tmp: Path, logs: dict[str, list], name: str = "witness.test/w1") -> Iterator[RunningWitness]:
    cosigner, _ = Cosigner.load_or_create(tmp / f"{hashlib.sha256(name.encode()).hexdigest()[:8]}.key", name)
    state_path = tmp / f"state-{base64.b32encode(name.encode()).decode()[:8]}.sqlite"
    state = WitnessState(state_path)
    witness = Witness(cosigner, logs, state, WitnessMetrics())
    server = WitnessHTTPServer(("127.0.0.1", 0), witness)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield RunningWitness(f"http://127.0.0.1:{server.server_address[1]}", witness, cosigner, state_path)
    finally:
        server.shutdown()
        server.server_close()
        state.close()
