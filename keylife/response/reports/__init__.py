"""Compliance reports: evidence computed from one registry snapshot bound to one signed checkpoint."""
