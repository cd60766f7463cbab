"""Compliance reports as an auditor gets them: from a running keylife over the API (``audit`` scope)
and offline from its data directory, bound to a signed checkpoint, recomputed by ``keylife report
check``, in JSON (validated against the documented schema), CSV, HTML (rendered in a real headless
Chromium) and PDF."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from keylife.demo.network import DemoConfig, DemoNetwork
from keylife.journal.note import check_signatures, parse
from keylife.journal.signing import Verifier
from keylife.response.reports.model import digest
from tests.journal_helpers import signer
from tests.server import live_server

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "docs" / "schemas" / "compliance-report.schema.json"
START = datetime(2025, 6, 2, tzinfo=UTC)
DEMO = DemoConfig(nodes=4, keys=24, seed=7, start=START, history=timedelta(days=3), interval=timedelta(minutes=30))
PARAMS = {"from": "2025-06-01", "to": "2025-06-06", "generated_at": "2025-06-06T00:00:00Z"}
# A one-day cryptoperiod for encryption keys, so rotations fall due inside the three days of history.
POLICY = "purposes:\n  encryption:\n    rotation_period: 1d\n"


@dataclass
class Served:
    data: Path
    verifier: str
    scenario: dict[str, str]
    keys: set[str]
    json: bytes
    json_again: bytes
    html: bytes
    csv: bytes
    owner_json: bytes
    viewer_status: int
    bad_selector: httpx.Response


def keylife(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keylife.cli", *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("reports")
    (tmp / "policy.yaml").write_text(POLICY)
    net = DemoNetwork(DEMO)
    events = net.history()
    with live_server(tmp, exporter={"policy": tmp / "policy.yaml"}) as live:
        ingest = {"Authorization": f"Bearer {live.tokens['ingest']}", "Content-Type": "application/x-ndjson"}
        for start in range(0, len(events), 1000):
            body = b"\n".join(orjson.dumps(e) for e in events[start : start + 1000])
            assert httpx.post(f"{live.url}/v1/events", content=body, headers=ingest).status_code == 200

        def get(token: str, **extra: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {live.tokens[token]}"}
            url = f"{live.url}/v1/reports/compliance"
            return httpx.get(url, params={**PARAMS, **extra}, headers=headers, timeout=60)

        first, again = get("auditor"), get("auditor")
        assert first.status_code == 200, first.text
        served = Served(
            data=tmp / "data", verifier=(tmp / "data" / "journal" / "verifier.key").read_text().strip(),
            scenario=net.scenario_keys(), keys={e["key_id"] for e in events if e.get("key_id")},
            json=first.content, json_again=again.content, html=get("auditor", format="html").content,
            csv=get("auditor", format="csv").content, owner_json=get("auditor", owner="team-payments").content,
            viewer_status=get("viewer").status_code, bad_selector=get("auditor", state="sideways"),
        )  # fmt: skip
    yield served


def report(served: Served) -> dict[str, Any]:
    return orjson.loads(served.json)


def test_the_report_states_the_fleet_at_a_checkpoint_the_journal_signed(served: Served) -> None:
    rep, scenario = report(served), served.scenario
    assert rep["inventory"]["total"] == len(served.keys) == sum(rep["inventory"]["by_state"].values())
    cp = parse(rep["checkpoint"]["note"])
    assert check_signatures(cp, [Verifier.parse(served.verifier)]) is None
    assert (cp.size, rep["integrity"]["checkpoint_size"]) == (rep["checkpoint"]["size"], cp.size)
    assert rep["digest"] == digest(rep)
    rules = {r["rule"]: r for r in rep["rules"]}
    assert list(rules) == ["banned_algorithm", "min_key_size", "operations_limit", "max_age", "rotation_overdue"]
    assert "SP 800-131A" in rules["banned_algorithm"]["source"] and "SP 800-38D" in rules["operations_limit"]["source"]
    assert "SP 800-57" in rules["rotation_overdue"]["source"]
    assert [k["key_id"] for k in rules["banned_algorithm"]["keys"]] == [scenario["legacy_3des"]]
    assert [k["key_id"] for k in rules["min_key_size"]["keys"]] == [scenario["legacy_rsa_1024"]]
    assert rules["banned_algorithm"]["keys"][0]["since"].startswith("2025-06-02T")
    overdue = rules["rotation_overdue"]  # the one-day policy: active encryption keys not rotated
    assert overdue["breaking"] > 0 and all(k["since"] >= "2025-06-02" for k in overdue["keys"])
    rot = rep["rotations"]
    assert rot["done"] >= 1 and rot["due"] >= rot["due_done"] and rot["overdue"] == overdue["breaking"]
    after = rep["use_after_withdrawal"]
    assert scenario["compromised"] in [i["key_id"] for i in after["items"]] and after["by_state"]["compromised"] >= 1
    assert scenario["expired"] in [i["key_id"] for i in rep["expired_in_use"]["items"]]
    prop = rep["propagation"]
    assert prop["withdrawn_keys"] == 2 and prop["fully_confirmed"] + (prop["unconfirmed_pairs"] > 0) >= 1
    assert rep["incidents"]["opened"] == 1 and rep["incidents"]["by_severity"] == {"critical": 1}


def test_same_checkpoint_same_bytes_from_the_server_and_offline(served: Served, tmp_path: Path) -> None:
    assert served.json == served.json_again  # no entry between the two: the same checkpoint, the same bytes
    out, note = tmp_path / "offline.json", tmp_path / "checkpoint"
    note.write_text(report(served)["checkpoint"]["note"])  # the server's: entries came after it (the stop)
    done = _offline(tmp_path, served, note, "json", out)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == served.json


def _offline(tmp: Path, served: Served, note: Path, fmt: str, out: Path) -> subprocess.CompletedProcess[str]:
    """``keylife report compliance`` offline at the checkpoint ``note``, with the server's policy."""
    return keylife("report", "compliance", "--data-dir", str(served.data), "--from", PARAMS["from"], "--to",
                   PARAMS["to"], "--generated-at", PARAMS["generated_at"], "--config", str(_policy_config(tmp, served)),
                   "--checkpoint", str(note), "--format", fmt, "-o", str(out))  # fmt: skip


def _policy_config(tmp: Path, served: Served) -> Path:
    config = tmp / "keylife.yaml"
    config.write_text(f"exporter:\n  policy: {served.data.parent / 'policy.yaml'}\n")
    return config


def _check(path: Path, served: Served, key: str | None = None) -> subprocess.CompletedProcess[str]:
    return keylife("report", "check", str(path), "--key", key or served.verifier, "--data-dir", str(served.data))


def test_check_recomputes_and_names_what_does_not_hold(served: Served, tmp_path: Path) -> None:
    good = tmp_path / "report.json"
    good.write_bytes(served.json)
    done = _check(good, served)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"OK {report(served)['digest']}: every figure is what the journal implies")
    page = tmp_path / "report.html"
    page.write_bytes(served.html)
    assert _check(page, served).returncode == 0  # the HTML embeds the same report
    page.write_bytes(served.html.replace(b"<td>compromised</td>", b"<td>revoked</td>", 1))  # the text, not the JSON
    done = _check(page, served)
    assert done.returncode == 1 and done.stdout.startswith("FAIL html: the page is not the rendering")

    forged = report(served)
    forged["inventory"]["by_state"]["active"] += 1
    forged["digest"] = digest(forged)  # a forger who recomputes the digest
    good.write_bytes(orjson.dumps(forged))
    done = _check(good, served)
    real = report(served)["inventory"]["by_state"]["active"]
    assert done.returncode == 1
    assert f"FAIL inventory.by_state.active: the report says {real + 1}, the journal implies {real}" in done.stdout

    forged["inventory"]["by_state"]["active"] -= 1  # the figure back, the digest stale
    good.write_bytes(orjson.dumps(forged))
    done = _check(good, served)
    assert done.returncode == 1 and done.stdout.startswith("FAIL digest:")

    good.write_bytes(served.json)
    stranger = signer(tmp_path / "stranger", "test.keylife/api").verifier.encode()  # same name, another key
    done = _check(good, served, stranger)
    assert done.returncode == 1 and done.stdout.startswith("FAIL checkpoint:")
    done = _check(tmp_path / "missing.json", served)
    assert done.returncode == 2 and "missing.json" in done.stderr


def test_a_report_needs_the_audit_scope_and_a_valid_selector(served: Served) -> None:
    assert served.viewer_status == 403
    assert served.bad_selector.status_code == 422 and "states" in served.bad_selector.json()["detail"]
    owned = orjson.loads(served.owner_json)
    assert owned["selector"] == {"owner": "team-payments"}
    assert set(owned["inventory"]["by_owner"]) == {"team-payments"}
    assert owned["inventory"]["total"] == report(served)["inventory"]["by_owner"]["team-payments"]


def test_json_validates_against_the_documented_schema(served: Served) -> None:
    schema = orjson.loads(SCHEMA.read_bytes())
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(report(served))
    validator.validate(orjson.loads(served.owner_json))
    broken = report(served)
    del broken["propagation"]
    broken["rotations"]["on_time_rate"] = 2
    problems = sorted(e.message for e in validator.iter_errors(broken))
    assert any("'propagation' is a required property" in p for p in problems) and len(problems) == 2


def test_csv_has_one_row_per_figure(served: Served) -> None:
    rows = list(csv.reader(io.StringIO(served.csv.decode())))
    assert rows[0] == ["section", "path", "value"]
    values = {path: value for _, path, value in rows[1:]}
    rep = report(served)
    assert values["inventory.total"] == str(rep["inventory"]["total"]) and values["digest"] == rep["digest"]
    assert values["rules.0.rule"] == "banned_algorithm" and "checkpoint.note" not in values


CHARTS = ["Keys by state over the period", "Age of usable keys at the period's end",
          "Rotation compliance: active keys not yet due", "Top owners by broken rules"]  # fmt: skip
MARKS = (
    "Array.from(document.querySelectorAll('figure.chart')).map(f => [f.querySelector('figcaption').textContent,"
    " f.querySelectorAll('svg .mark').length, f.querySelector('svg').getBoundingClientRect().height])"
)


def test_html_renders_in_chromium_with_data_in_every_chart(served: Served, tmp_path: Path) -> None:
    from tests.chromium import Browser

    page = tmp_path / "report.html"
    page.write_bytes(served.html)
    text = served.html.decode()
    assert not any(s in text for s in ("src=", "href=", "url(", "@import", "<link"))  # nothing fetched
    browser = Browser()
    try:
        browser.load(page.as_uri())
        charts = browser.evaluate(MARKS)
        fetched = browser.evaluate("performance.getEntriesByType('resource').length")
        title = browser.evaluate("document.title")
        browser.screenshot(tmp_path / "report.png")  # the artifact: kept under the test's tmp dir
        browser.call("Emulation.setEmulatedMedia", session=True, media="print")
        printed = browser.evaluate("getComputedStyle(document.body).maxWidth")
        errors = browser.errors()
    finally:
        browser.close()
    assert errors == []
    assert [c[0] for c in charts] == CHARTS
    assert all(marks > 0 and height > 50 for _, marks, height in charts), charts
    assert fetched == 0 and title == "keylife compliance report 2025-06-01 to 2025-06-06"
    assert printed == "none"  # the print stylesheet applies: full page width
    png = (tmp_path / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


def test_pdf_is_the_html_printed_by_chromium(served: Served, tmp_path: Path) -> None:
    from keylife.cli.report_pdf import chromium
    from tests.ci import require

    require(chromium(), "chromium not found; apt-get install chromium")
    note, out = tmp_path / "checkpoint", tmp_path / "report.pdf"
    note.write_text(report(served)["checkpoint"]["note"])
    done = _offline(tmp_path, served, note, "pdf", out)
    assert done.returncode == 0, done.stderr
    pdf = out.read_bytes()
    pages = re.findall(rb"/Type\s*/Page\b", pdf)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF") and 1 <= len(pages) <= 12
    assert report(served)["digest"] in done.stderr


def test_the_documented_example_is_a_valid_report_with_its_screenshot() -> None:
    from keylife.cli.report_cli import load_report
    from keylife.response.reports.html import to_html

    page = ROOT / "docs" / "examples" / "compliance-report.html"
    example = load_report(page)
    assert to_html(example) == page.read_bytes(), "stale example: run python -m tests.report_example"
    jsonschema.Draft202012Validator(orjson.loads(SCHEMA.read_bytes())).validate(example)
    assert example["digest"] == digest(example)
    png = (ROOT / "docs" / "examples" / "compliance-report.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
