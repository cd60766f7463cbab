"""The write path: ingest bodies parsed into events (``lines``), the ledger that validates, journals and
projects them (``ledger``), and the ingest path's counters (``telemetry``)."""
