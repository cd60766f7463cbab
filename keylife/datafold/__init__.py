"""The DataFold adapter: what DataFold nodes emit (logs, SSE, key status) turned into keylife events."""
