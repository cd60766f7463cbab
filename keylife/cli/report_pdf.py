"""The PDF report: the HTML page printed by headless Chromium (``--print-to-pdf``), no new dependency.

Chromium comes from the system (Debian's ``chromium``); ``KEYLIFE_CHROMIUM`` names another binary.
The page has no external resource, so printing it needs no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--no-pdf-header-footer", "--disable-dev-shm-usage")  # fmt: skip


def chromium() -> str | None:
    named = os.environ.get("KEYLIFE_CHROMIUM")
    if named:
        return named
    return next((found for name in NAMES if (found := shutil.which(name))), None)


def html_to_pdf(page: bytes, timeout: float = 120.0) -> bytes:
    binary = chromium()
    if binary is None:
        raise RuntimeError("the PDF format needs Chromium: apt-get install chromium (or set KEYLIFE_CHROMIUM)")
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        source.write_bytes(page)
        done = subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={tmp}/profile", f"--print-to-pdf={target}", source.as_uri()],
            capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip
        if not target.exists() or target.stat().st_size == 0:
            tail = done.stderr.decode(errors="replace")[-500:]
            raise RuntimeError(f"chromium printed no PDF (exit {done.returncode}): {tail}")
        return target.read_bytes()
