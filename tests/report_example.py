"""Regenerate the documented example report: ``python -m tests.report_example``.

The seeded demo fleet of tests/test_reports.py (its policy: a one-day encryption cryptoperiod),
served by a real keylife, asked for the HTML report; the screenshot is taken in headless Chromium.
Writes docs/examples/compliance-report.html and .png (the test checks the page is today's rendering).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import httpx
import orjson

from keylife.demo.network import DemoNetwork
from tests.chromium import Browser
from tests.server import live_server
from tests.test_reports import DEMO, PARAMS, POLICY

OUT = Path(__file__).resolve().parents[1] / "docs" / "examples"


def main() -> None:
    events = DemoNetwork(DEMO).history()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        (tmp / "policy.yaml").write_text(POLICY)
        os.chdir(tmp)  # the report names its policy file as configured: "policy.yaml", not a temporary path
        with live_server(tmp, exporter={"policy": Path("policy.yaml")}) as live:
            ingest = {"Authorization": f"Bearer {live.tokens['ingest']}", "Content-Type": "application/x-ndjson"}
            for start in range(0, len(events), 1000):
                body = b"\n".join(orjson.dumps(e) for e in events[start : start + 1000])
                httpx.post(f"{live.url}/v1/events", content=body, headers=ingest).raise_for_status()
            audit = {"Authorization": f"Bearer {live.tokens['auditor']}"}
            url = f"{live.url}/v1/reports/compliance"
            page = httpx.get(url, params={**PARAMS, "format": "html"}, headers=audit, timeout=60)
            page.raise_for_status()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "compliance-report.html").write_bytes(page.content)
    browser = Browser()
    try:
        browser.load((OUT / "compliance-report.html").as_uri())
        browser.screenshot(OUT / "compliance-report.png")
    finally:
        browser.close()


if __name__ == "__main__":
    main()
