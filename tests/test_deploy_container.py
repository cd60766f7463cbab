"""The Containerfile, without a container engine (none runs in CI here): what it copies is enough
to build the package with its entry point and data files, its user is the one the Kubernetes
manifests run as, and its entrypoint and default command are a keylife command line that reads
the config where the StatefulSet mounts it."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.ci import REPO
from tests.deploy_k8s import K8S, render

CONTAINERFILE = REPO / "Containerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined."""
    text = CONTAINERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    start = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[start:]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(K8S / "base")


def test_runs_as_the_user_the_manifests_expect(base: list[dict[str, Any]]) -> None:
    (user,) = [args for op, args in _final_stage() if op == "USER"]
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0 and gid != 0
    (sts,) = [r for r in base if r["kind"] == "StatefulSet"]
    context = sts["spec"]["template"]["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (uid, gid, gid)
    assert context["runAsNonRoot"] is True
    # The image owns the directories the pod writes to when no volume is mounted there.
    run = " ".join(args for op, args in _final_stage() if op == "RUN")
    assert f"install -d -o {uid} -g {gid} -m 0700 /var/lib/keylife /etc/keylife/secrets" in run


def test_entrypoint_and_command_are_the_manifests_keylife(base: list[dict[str, Any]]) -> None:
    steps = dict(_final_stage())
    entrypoint, command = json.loads(steps["ENTRYPOINT"]), json.loads(steps["CMD"])
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["keylife"] and "keylife" in scripts
    (sts,) = [r for r in base if r["kind"] == "StatefulSet"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["image"].split(":")[0] == "keylife"  # kustomize `images` renames it per overlay
    assert container["args"] == command  # the image's default is what the StatefulSet runs
    config_path = Path(command[command.index("--config") + 1])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    config_volume = next(name for name, v in volumes.items() if "configMap" in v)
    assert config_path.parent == Path(mounts[config_volume]) and config_path.name == "keylife.yaml"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("keylife")), *command, "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--config" in done.stdout  # keylife parses the default command line


def test_copied_sources_build_the_package(tmp_path: Path) -> None:
    """Only what the build stage COPYs, built as it builds it: the wheel has every module of the
    checkout's packages, the exporter's data files and the keylife entry point."""
    copies = [shlex.split(args) for op, args in _instructions() if op == "COPY" and "--from" not in args]
    context = tmp_path / "src"
    context.mkdir()
    for *sources, dest in copies:
        for source in sources:
            path = REPO / source
            assert path.exists(), f"COPY {source}: not in the repository"
            if dest.startswith("/etc/"):
                continue  # the final stage's example config, not part of the build
            target = context / (source if dest.endswith("/") or dest == "./" else dest.removeprefix("./"))
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for top in {pattern.rstrip("*") for pattern in packages}:
        expected = {
            str(p.relative_to(REPO))
            for p in (REPO / top).rglob("*.py")
            if "__pycache__" not in p.parts and "tests" not in p.parts
        }
        assert expected <= names, sorted(expected - names)[:5]
    assert {str(p.relative_to(REPO)) for p in (REPO / "exporter").glob("*.yaml")} <= names
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "keylife = keylife.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
