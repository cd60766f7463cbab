"""The lowest layer: small pieces every other layer may use (canonical JSON, backoff, secret files,
logs, the data-directory lock, GC tuning, directory fsync). Imports nothing else of keylife."""
