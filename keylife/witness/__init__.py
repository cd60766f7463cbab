"""C2SP tlog-witness, both ways: a witness server (``keylife witness serve``) and the log's client.

Imports only ``keylife.journal`` and ``keylife.common`` (tests/test_layers.py).
"""
