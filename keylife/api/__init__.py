"""The HTTP API: ingest, key queries, commands, health; authenticated with scoped tokens."""
