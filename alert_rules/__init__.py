"""Prometheus rules for keylife, rendered from ``config.yaml`` (``python -m alert_rules.render``)."""
