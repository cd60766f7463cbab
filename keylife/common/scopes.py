"""The API token scopes: a constant the ``keylife`` command needs at start-up, kept apart from the
config models so that commands which load no config (``verify``, ``journal``) do not import
pydantic's config machinery just to build their help text."""

SCOPES = ("ingest", "read", "admin", "forward")  # forward: journal quarantine notices (keylife forward)
