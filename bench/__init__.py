"""keylife benchmarks: ``bash bench/run.sh`` (or ``python -m bench``) runs them all.

One module per measurement, each bounded in time and count, each starting and stopping what
it needs (a server on an OS-picked loopback port, a temp journal); ``bench.run`` collects
their results into one JSON document and the README table.
"""
