"""Incident response over the journal: the signed revocation feed and per-node confirmation,
bulk plans, lockdowns, dual control, incidents and the reactions that open them.

Everything here acts through the ledger (every action a journaled command or record) and reads
the registry; the API and the CLI are thin shells over it. Layer: above ``keylife.ingest``,
below ``keylife.api`` (tests/test_layers.py).
"""
