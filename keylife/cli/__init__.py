"""The composition root: the ``keylife`` commands, the ``serve`` runtime, and the wiring of the exporter and
the forwarder. The only package under ``keylife/`` that imports ``exporter`` or ``audit_forwarder``
(``tests/test_layers.py`` enforces it)."""
