"""Prometheus collectors and OTLP metrics over the registry and the pipeline.

``fleet`` keeps the in-memory index a scrape reads, ``policy`` judges keys, ``collectors``
format snapshots, ``service`` assembles them for ``keylife serve``, ``standalone`` for
``keylife exporter``, and ``otlp`` pushes the same families over OTLP.
"""
