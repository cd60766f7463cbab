"""The one CI rule for skips (tests/ci.py): a missing binary, sample or module skips a test on a
developer's machine and fails it under CI; and no test decides that on its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import ci
from tests.datafold_samples import SAMPLES

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", " true ", "on-premise-runner"])
def test_ci_values_fail_instead_of_skipping(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert ci.in_ci()
    with pytest.raises(pytest.fail.Exception, match="the samples are missing; CI must not skip it"):
        ci.require(tmp_path / "absent", "the samples are missing")
    with pytest.raises(pytest.fail.Exception, match="no-such-binary-keylife not found"):
        ci.require_binary("no-such-binary-keylife", "install it", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="CI must not skip it"):
        ci.require(None, "a module is missing")


@pytest.mark.parametrize("value", [None, "", "0", "false", "False", "no", "off"])
def test_outside_ci_a_missing_dependency_skips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not ci.in_ci()
    with pytest.raises(pytest.skip.Exception, match=r"^the samples are missing$"):
        ci.require(tmp_path / "absent", "the samples are missing")
    with pytest.raises(pytest.skip.Exception, match=r"no-such-binary-keylife not found \(install it\)"):
        ci.require_binary("no-such-binary-keylife", "install it")


def test_what_is_there_is_returned_in_both_modes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = tmp_path / "sbin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    for value in ("true", ""):
        monkeypatch.setenv("CI", value)
        assert ci.require(tmp_path, "x") == tmp_path
        assert ci.require("module", "x") == "module"
        assert ci.require_binary("tool", "x", str(tool.parent)) == str(tool)  # not on PATH: the extra dir


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_missing_datafold_samples_fail_under_ci_and_skip_outside(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    import tests.datafold_samples as samples

    monkeypatch.setattr(samples, "SAMPLES", tmp_path / "shared" / "datafold" / "samples")
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"DataFold samples not found at .*CI must not skip it"):
        samples.samples_dir()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="DataFold samples not found"):
        samples.samples_dir()


def test_samples_come_from_beside_the_repository_never_a_machine_path() -> None:
    assert ci.REPO.parent / "shared" / "datafold" / "samples" == SAMPLES
    machine = [p.name for p in TESTS.rglob("*.py") if p.name != "test_ci.py" and "/work/" in p.read_text()]
    assert machine == [], "tests must not name a machine-specific path"


# Deciding to skip, or reading CI, anywhere but tests/ci.py would bring back a second rule.
_OWN_RULE = re.compile(
    r"pytest\.skip\(|\bskipif\(|importorskip\(|pytest\.mark\.skip\b|environ(?:\.get)?\(\s*[\"']CI[\"']|getenv\(\s*[\"']CI"
)


def test_every_skip_goes_through_the_one_rule() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{n}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.name not in ("ci.py", "test_ci.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _OWN_RULE.search(line)
    ]
    assert offenders == [], "use tests/ci.py (require, require_binary, unavailable):\n" + "\n".join(offenders)
