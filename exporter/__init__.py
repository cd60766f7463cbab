"""Prometheus collectors and OTLP metrics over the registry and the pipeline (issue 3).

Until then keylife serves its ingest counters from ``keylife.telemetry`` at ``/metrics``.
"""
