"""Grafana dashboards for keylife, written with grafana-foundation-sdk.

The Python modules are the source; ``dashboards/json/`` holds what they render, committed so
Grafana can provision the files without running Python and so a review shows the JSON diff.
``python -m dashboards.generate`` rewrites the JSON, ``--check`` fails when the two differ.
"""
