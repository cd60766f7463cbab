"""The domain: the event model and the key lifecycle. Imports only ``keylife.common``."""
