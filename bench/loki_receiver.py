"""A lean Loki push receiver for benchmarks, run as its own process on the other core.

Why not ``tests/fakes/loki.py``: the fake validates every entry in Python and keeps them all, so
at 50k+ entries/s it would measure itself. This one does what Loki must do before it can
answer (decompress, decode the protobuf or JSON, read each entry's ``seq`` / ``event_id``
structured metadata), records the arrival time of each event id when asked to, and answers 204.

    python -m bench.loki_receiver --ready-file PATH [--record-arrivals]

``GET /stats`` answers ``{"entries", "requests", "max_seq", "arrivals": {event_id: unix time}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cramjam
import orjson

from audit_forwarder.sinks.loki_push_pb2 import PushRequest


class Stats:
    def __init__(self, record_arrivals: bool) -> None:
        self.entries = 0
        self.requests = 0
        self.max_seq = -1
        self.record_arrivals = record_arrivals
        self.arrivals: dict[str, float] = {}

    def protobuf(self, body: bytes) -> None:
        push = PushRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
        now = time.time()
        for stream in push.streams:
            for entry in stream.entries:
                self.entries += 1
                for pair in entry.structuredMetadata:
                    if pair.name == "seq":
                        self.max_seq = max(self.max_seq, int(pair.value))
                    elif pair.name == "event_id" and self.record_arrivals:
                        self.arrivals[pair.value] = now

    def json(self, body: bytes) -> None:
        now = time.time()
        for stream in orjson.loads(body)["streams"]:
            for value in stream["values"]:
                self.entries += 1
                metadata = value[2] if len(value) > 2 else {}
                if "seq" in metadata:
                    self.max_seq = max(self.max_seq, int(metadata["seq"]))
                if self.record_arrivals and "event_id" in metadata:
                    self.arrivals[metadata["event_id"]] = now


def handler(stats: Stats) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Type", "").startswith("application/json"):
                stats.json(body)
            else:
                stats.protobuf(body)
            stats.requests += 1
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            data = orjson.dumps(
                {
                    "entries": stats.entries,
                    "requests": stats.requests,
                    "max_seq": stats.max_seq,
                    "arrivals": stats.arrivals,
                }
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--record-arrivals", action="store_true")
    args = parser.parse_args()
    stats = Stats(args.record_arrivals)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(stats))
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as handle:
        json.dump({"url": f"http://127.0.0.1:{server.server_address[1]}", "pid": os.getpid()}, handle)
    os.replace(tmp, args.ready_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
