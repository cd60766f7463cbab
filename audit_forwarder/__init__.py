"""Audit journal (the source of truth) and, later, the shipper that forwards it to sinks."""
