"""The runbooks (docs/runbooks/) against what they describe, so they cannot drift.

One runbook per alert of alert_rules/CONTRACT.md, with the fixed sections and the contract's
severities; every metric they name is in docs/metrics.md (generated from the collectors) or is a
recording rule of the contract; every label they select on is one of that metric's labels; every
relative link resolves; every `keylife ...` command parses with the real CLI parser; every
`GET`/`POST` path is a route of the API.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from keylife.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS = ROOT / "docs" / "runbooks"
CONTRACT = ROOT / "alert_rules" / "CONTRACT.md"
METRICS = ROOT / "docs" / "metrics.md"
API = ROOT / "keylife" / "api" / "app.py"

SECTIONS = ("Severity", "Meaning", "Impact", "Diagnosis", "Mitigation", "Escalation")
SEVERITY_WORDS = re.compile(r"\b(critical|warning|info|none)\b")
# Labels every scraped series carries besides its own.
TARGET_LABELS = frozenset({"job", "instance"})
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")

METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_])keylife_[a-z0-9_]+")
RECORDING_NAME = re.compile(r"(?<![A-Za-z0-9_])keylife:[a-z0-9_:]*[a-z0-9_]")
SELECTOR = re.compile(r"(?<![A-Za-z0-9_])(keylife_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
ENDPOINT = re.compile(r"\b(GET|POST)\s+(/[A-Za-z0-9_{}/.\-]*)")
ROUTE = re.compile(r"@app\.(get|post)\(\s*\"([^\"]+)\"")


def section(text: str, title: str) -> str:
    """The body of the first ``## <title>...`` section (up to the next ``## `` heading)."""
    match = re.search(rf"^## {re.escape(title)}\b.*$", text, re.MULTILINE)
    if match is None:
        return ""
    rest = text[match.end() :]
    following = re.search(r"^## ", rest, re.MULTILINE)
    return rest if following is None else rest[: following.start()]


def severities_in(text: str) -> set[str]:
    """Severity words outside parentheses: 'warning (within 30 d), critical' -> {warning, critical}."""
    return set(SEVERITY_WORDS.findall(re.sub(r"\([^)]*\)", "", text)))


def contract_alerts() -> dict[str, set[str]]:
    """alertname -> severities, from the ``- Name: ...`` bullets under "## Alerts"."""
    alerts: dict[str, set[str]] = {}
    for line in section(CONTRACT.read_text(encoding="utf-8"), "Alerts").splitlines():
        match = re.match(r"^- ([A-Z][A-Za-z0-9]*):\s*(.*)$", line)
        if match:
            name, rest = match.groups()
            assert name not in alerts, f"{name} is listed twice in {CONTRACT}"
            alerts[name] = severities_in(rest.split(" — ")[0])
    return alerts


def recording_rules() -> set[str]:
    body = section(CONTRACT.read_text(encoding="utf-8"), "Recording rules")
    return set(re.findall(r"^- `(keylife:[^`]+)`", body, re.MULTILINE))


def documented_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """metric -> (type, labels), from the tables of docs/metrics.md."""
    metrics = {}
    for line in METRICS.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `(keylife_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \|", line)
        if match:
            name, kind, labels = match.groups()
            metrics[name] = (kind, frozenset(re.findall(r"`(\w+)`", labels)))
    return metrics


def resolve_metric(name: str, metrics: dict[str, tuple[str, frozenset[str]]]) -> frozenset[str] | None:
    """The labels a series name may carry (histogram series included), None when unknown."""
    if name in metrics:
        return metrics[name][1] | TARGET_LABELS
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and metrics.get(base, ("", frozenset()))[0] == "histogram":
            extra = {"le"} if suffix == "_bucket" else set()
            return metrics[base][1] | TARGET_LABELS | extra
    return None


def code_snippets(text: str) -> list[str]:
    """Inline code spans and the lines of fenced blocks."""
    snippets = [line.strip() for block in FENCE.findall(text) for line in block.splitlines()]
    return snippets + INLINE_CODE.findall(FENCE.sub("", text))


ALERTS = contract_alerts()
PAGES = sorted(RUNBOOKS.glob("*.md"))
# The operator guides the runbooks send people to: their commands, endpoints and links are checked too.
GUIDES = [ROOT / "docs" / "incident-response.md", ROOT / "docs" / "revocation-feed.md", ROOT / "docs" / "reporting.md"]


def test_contract_lists_alerts_with_severities() -> None:
    assert len(ALERTS) >= 20, f"only {len(ALERTS)} alerts parsed from {CONTRACT}"
    for name, severities in ALERTS.items():
        assert severities, f"{name}: no severity found in the contract line"


def test_one_runbook_per_alert_and_no_other() -> None:
    pages = {page.stem for page in PAGES} - {"README"}
    assert pages == set(ALERTS), (
        f"missing: {sorted(set(ALERTS) - pages)}; not in the contract: {sorted(pages - set(ALERTS))}"
    )


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_runbook_shape(alert: str) -> None:
    path = RUNBOOKS / f"{alert}.md"
    assert path.is_file(), f"no runbook for {alert}: {path}"
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == f"# {alert}", f"{path.name} must start with '# {alert}'"
    headings = re.findall(r"^## (\w+)", text, re.MULTILINE)
    assert [h for h in headings if h in SECTIONS] == list(SECTIONS), f"{path.name}: sections {headings}"
    for title in ("Meaning", "Impact", "Escalation"):
        assert section(text, title).strip(), f"{path.name}: '{title}' is empty"
    for title in ("Diagnosis", "Mitigation"):
        assert re.search(r"^1\. ", section(text, title), re.MULTILINE), f"{path.name}: '{title}' has no numbered steps"


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_runbook_severities_match_contract(alert: str) -> None:
    text = (RUNBOOKS / f"{alert}.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(critical|warning|info|none)`", section(text, "Severity")))
    assert named == ALERTS[alert], f"{alert}: runbook names {sorted(named)}, contract says {sorted(ALERTS[alert])}"


def test_index_lists_every_alert() -> None:
    rows = {}
    for line in (RUNBOOKS / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in ALERTS:
            rows[cells[0]] = cells
    assert set(rows) == set(ALERTS), f"index misses {sorted(set(ALERTS) - set(rows))}"
    for alert, (_, severities, meaning, link) in rows.items():
        assert severities_in(severities) == ALERTS[alert], f"index row of {alert}: severities '{severities}'"
        assert meaning, f"index row of {alert}: no meaning"
        assert f"({alert}.md)" in link, f"index row of {alert} does not link {alert}.md"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_metrics_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    metrics = documented_metrics()
    assert metrics, f"no metrics parsed from {METRICS}"
    rules = recording_rules()
    assert rules, f"no recording rules parsed from {CONTRACT}"
    unknown = sorted({name for name in METRIC_NAME.findall(text) if resolve_metric(name, metrics) is None})
    unknown += sorted(set(RECORDING_NAME.findall(text)) - rules)
    assert not unknown, f"{page.name} names metrics that are neither in docs/metrics.md nor recording rules: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_selector_labels_exist(page: Path) -> None:
    metrics = documented_metrics()
    wrong = []
    for name, matchers in SELECTOR.findall(page.read_text(encoding="utf-8")):
        allowed = resolve_metric(name, metrics)
        if allowed is None:
            continue  # reported by test_metrics_exist
        wrong += [f"{name}{{{label}}}" for label in MATCHER.findall(matchers) if label not in allowed]
    assert not wrong, f"{page.name} selects on labels these metrics do not have: {wrong}"


@pytest.mark.parametrize("page", [*PAGES, *GUIDES], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # absolute URL or an anchor in the page itself
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page.name} has broken links: {broken}"


def parses(argv: list[str]) -> bool:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code == 0
    return True


@pytest.mark.parametrize("page", [*PAGES, *GUIDES], ids=lambda p: p.name)
def test_cli_commands_parse(page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    commands = []
    for snippet in code_snippets(page.read_text(encoding="utf-8")):
        if snippet.startswith("keylife "):
            commands.append(re.split(r" (?:\||>|&&|;) ", snippet)[0])
    for command in commands:
        argv = shlex.split(command)[1:]
        capsys.readouterr()
        if parses(argv):
            continue
        error = capsys.readouterr().err.strip()
        # A bare name in prose (`keylife ingest`) must still name a real command.
        if not (all(re.fullmatch(r"[a-z]+", word) for word in argv) and parses([*argv, "--help"])):
            pytest.fail(f"{page.name}: `{command}` does not parse: {error}")


@pytest.mark.parametrize("page", [*PAGES, *GUIDES], ids=lambda p: p.name)
def test_api_endpoints_exist(page: Path) -> None:
    def normal(path: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", path.rstrip(".,"))

    sources = [API, *sorted(API.parent.glob("*_routes.py"))]  # route modules beside app.py
    found = [r for source in sources for r in ROUTE.findall(source.read_text(encoding="utf-8"))]
    routes = {(method.upper(), normal(path)) for method, path in found}
    assert routes, f"no routes parsed from {API}"
    text = page.read_text(encoding="utf-8")
    cited = {(method, normal(path)) for method, path in ENDPOINT.findall(text) if not path.startswith("/api/")}
    unknown = sorted(cited - routes)
    assert not unknown, f"{page.name} cites endpoints the API does not have: {unknown}"
