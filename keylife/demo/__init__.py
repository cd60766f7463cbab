"""The demo network: a simulated DataFold fleet (``scenario``) that feeds a keylife over its API (``network``)."""
