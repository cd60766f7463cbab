"""The registry: the journal projected into SQLite (``projection``) and its read-only queries (``queries``)."""
