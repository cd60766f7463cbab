"""The benchmark runner: a quick pass of every benchmark yields the documented JSON, each figure
records the code it measured, and the README table never claims one commit for figures measured
on different code.

Speed is not asserted here (bench/ measures it); only that each benchmark produces its figures.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).parents[1]
EXPECTED = {
    "ingest_http": "ingest_http_events_per_s",
    "journal_append": "journal_append_events_per_s",
    "ack_latency": "ack_latency_p99_ms",
    "verify": "verify_entries_per_s",
    "bytes_sealed": "bytes_per_event_sealed",
    "scrape": "scrape_p50_ms_1m_keys",
    "reports": "report_json_seconds_100k_keys_1y",
}


def test_quick_bench_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    readme_before = (ROOT / "README.md").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-readme", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = orjson.loads(out.read_bytes())
    assert report["quick"] is True and report["machine"]["nproc"] >= 1
    for name, measurement in EXPECTED.items():
        metrics = {m["measurement"]: m for m in report["benchmarks"][name]["metrics"]}
        assert metrics[measurement]["figure"] > 0, (name, metrics)
        assert report["benchmarks"][name]["git_commit"] and report["benchmarks"][name]["git_dirty"] in (True, False)
    assert (ROOT / "README.md").read_text() == readme_before


# ----- which code the figures describe ---------------------------------------------------------
def _doc(**commits: str | dict) -> dict:
    """A results document with one figure per benchmark, each measured at the given commit."""
    benches = {}
    for name, code in commits.items():
        stamp = code if isinstance(code, dict) else {"git_commit": code, "git_dirty": False, "git_diff_sha256": None}
        metric = {"measurement": f"{name}_per_s", "figure": 1234.5, "unit": "events/s", "target": None, "met": None}
        benches[name] = {"metrics": [metric], "date": "2026-12-01T10:00:00+00:00", **stamp}
    machine = {"nproc": 2, "cpu_model": "test CPU", "mem_gib": 4.0, "python": "3.11.7"}
    return {"date": "2026-12-01T10:00:00+00:00", "git_commit": "ffff000", "machine": machine, "benchmarks": benches}


def _readme(tmp_path: Path) -> Path:
    from bench.run import END, START

    path = tmp_path / "README.md"
    path.write_text(f"# x\n{START}\nold table\n{END}\nafter\n")
    return path


def test_figures_from_one_commit_name_it_in_the_footer() -> None:
    from bench.run import table

    text = table(_doc(a="abc1234", b="abc1234"))
    assert "Measured 2026-12-01 at commit `abc1234` on 2 × test CPU" in text
    assert "| `a_per_s` | 1,234 | events/s | – | – |" in text and "commit |" not in text


def test_figures_from_different_commits_are_refused_and_the_readme_left_alone(tmp_path: Path) -> None:
    from bench.run import MixedCommits, rewrite_readme

    readme = _readme(tmp_path)
    before = readme.read_text()
    with pytest.raises(MixedCommits, match=r"a at abc1234, b at def5678.*--allow-mixed"):
        rewrite_readme(_doc(a="abc1234", b="def5678"), readme)
    assert readme.read_text() == before


def test_allowed_mixed_figures_name_their_commit_per_row_and_the_footer_says_so(tmp_path: Path) -> None:
    from bench.run import rewrite_readme

    readme = _readme(tmp_path)
    rewrite_readme(_doc(a="abc1234", b="def5678"), readme, allow_mixed=True)
    text = readme.read_text()
    assert "| measurement | figure | unit | target | met | commit |" in text
    assert "| `a_per_s` | 1,234 | events/s | – | – | `abc1234` |" in text
    assert "| `b_per_s` | 1,234 | events/s | – | – | `def5678` |" in text
    assert "at 2 different commits (each row names its own" in text and "at commit `" not in text
    assert text.endswith("after\n") and "old table" not in text


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"git_commit": "abc1234", "git_dirty": True, "git_diff_sha256": "11"}, "abc1234"),  # dirty vs clean
        ({"git_commit": "abc1234", "git_dirty": True, "git_diff_sha256": "11"},
         {"git_commit": "abc1234", "git_dirty": True, "git_diff_sha256": "22"}),  # two different changes
        ({"git_commit": None}, {"git_commit": None}),  # unknown code is never one commit
        ({"git_commit": "abc1234-dirty"}, "abc1234"),  # the older results' form of a dirty tree
    ],
)  # fmt: skip
def test_the_same_commit_with_different_changes_is_different_code(a: str | dict, b: str | dict) -> None:
    from bench.run import MixedCommits, table

    with pytest.raises(MixedCommits):
        table(_doc(a=a, b=b))


def test_a_dirty_tree_is_said_in_the_footer() -> None:
    from bench.run import table

    dirty = {"git_commit": "abc1234", "git_dirty": True, "git_diff_sha256": "0123456789abcdef"}
    text = table(_doc(a=dirty, b=dirty))
    assert "at commit `abc1234+dirty.0123456789abcdef` (on a working tree with uncommitted changes)" in text


def test_provenance_records_the_commit_and_whether_and_how_the_tree_differs(tmp_path: Path) -> None:
    from bench.run import provenance

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("table\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "one")
    head = git("rev-parse", "--short", "HEAD")
    assert provenance(tmp_path) == {"git_commit": head, "git_dirty": False, "git_diff_sha256": None}
    (tmp_path / "README.md").write_text("a new table\n")  # the runner's own output is not code
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "latest.json").write_text("{}")
    assert provenance(tmp_path)["git_dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    first = provenance(tmp_path)
    assert first["git_commit"] == head and first["git_dirty"] is True and first["git_diff_sha256"]
    (tmp_path / "code.py").write_text("x = 3\n")
    assert provenance(tmp_path)["git_diff_sha256"] != first["git_diff_sha256"]
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "new_module.py").write_text("y = 1\n")  # an untracked module changes the code too
    assert provenance(tmp_path)["git_dirty"] is True


def test_every_bench_module_with_a_run_function_is_run() -> None:
    from bench.run import BENCHMARKS

    modules = {
        f"bench.{p.stem}" for p in (ROOT / "bench").glob("*.py") if re.search(r"^def run\(quick\b", p.read_text(), re.M)
    }
    assert modules and modules == set(BENCHMARKS.values())


def _fake_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, commits: list[str]) -> Path:
    """Run the runner in-process with every benchmark replaced by an instant one, the tree's commit
    taken from ``commits`` in turn; return the README it writes."""
    import bench.run as runner

    stamps = iter(commits)
    last = {"commit": commits[0]}

    def fake_provenance() -> dict:
        last["commit"] = next(stamps, last["commit"])
        return {"git_commit": last["commit"], "git_dirty": False, "git_diff_sha256": None}

    def fake_child(name: str, quick: bool) -> dict:
        metric = {"measurement": f"{name}_x", "figure": 1.0, "unit": "u", "target": None, "met": None}
        return {"metrics": [metric], "seconds": 0.1}

    readme = tmp_path / "README.md" if (tmp_path / "README.md").exists() else _readme(tmp_path)
    monkeypatch.setattr(runner, "README", readme)
    monkeypatch.setattr(runner, "provenance", fake_provenance)
    monkeypatch.setattr(runner, "run_child", fake_child)
    return readme


def test_a_full_run_writes_one_commit_and_a_merged_run_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench.run as runner

    out = tmp_path / "latest.json"
    readme = _fake_run(monkeypatch, tmp_path, ["aaa1111"] * (len(runner.BENCHMARKS) + 1))
    assert runner.main(["--output", str(out)]) == 0
    report = orjson.loads(out.read_bytes())
    assert {b["git_commit"] for b in report["benchmarks"].values()} == {"aaa1111"}
    assert all(b["git_dirty"] is False for b in report["benchmarks"].values())
    assert set(report["benchmarks"]) == set(runner.BENCHMARKS) and report["seconds"] >= 0
    assert "at commit `aaa1111`" in readme.read_text()

    written = readme.read_text()
    _fake_run(monkeypatch, tmp_path, ["bbb2222"] * 2)  # a later commit; one benchmark rerun
    capsys.readouterr()
    assert runner.main(["--only", "scrape", "--output", str(out)]) == 2
    assert "README table not written" in capsys.readouterr().err
    merged = orjson.loads(out.read_bytes())["benchmarks"]
    assert merged["scrape"]["git_commit"] == "bbb2222" and merged["verify"]["git_commit"] == "aaa1111"
    assert readme.read_text() == written


def test_a_tree_that_changes_during_a_run_is_not_one_commit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import bench.run as runner

    readme = _fake_run(monkeypatch, tmp_path, ["aaa1111", "aaa1111", "ccc3333"])  # run start, first, the rest
    before = readme.read_text()
    assert runner.main(["--output", str(tmp_path / "latest.json")]) == 2
    assert readme.read_text() == before
    _fake_run(monkeypatch, tmp_path, ["aaa1111", "aaa1111", "ccc3333"])
    assert runner.main(["--output", str(tmp_path / "latest.json"), "--allow-mixed"]) == 0
    assert "`ccc3333` |" in readme.read_text()


def test_the_readme_table_is_the_recorded_results_and_names_their_commits() -> None:
    from bench.run import END, RESULTS, START, MixedCommits, table

    doc = orjson.loads((RESULTS / "latest.json").read_bytes())
    text = (ROOT / "README.md").read_text()
    shown = text[text.index(START) + len(START) : text.index(END)].strip()
    try:
        expected = table(doc)
    except MixedCommits:
        expected = table(doc, allow_mixed=True)  # mixed figures: only with a commit per row
    assert shown == expected, "README table is not bench/results/latest.json: run bash bench/run.sh"
