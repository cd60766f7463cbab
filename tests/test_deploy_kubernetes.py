"""deploy/kubernetes: what ``kustomize build`` renders is valid for the API server and the
prometheus-operator CRDs, wires together (selectors, ports, probes, Secret handling), and its
generated parts match their one source (alert_rules/keylife.rules.yml, dashboards/json)."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ci import REPO
from tests.deploy_k8s import K8S, by_kind, load_yaml, one, overlay_copy, render, validation_errors

GENERATE = runpy.run_path(str(K8S / "generate.py"))


@pytest.fixture(scope="module")
def overlay(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(overlay_copy(tmp_path_factory.mktemp("k8s")) / "overlays" / "example")


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(K8S / "base")


def test_generated_files_match_their_sources() -> None:
    for path, text in GENERATE["outputs"]().items():
        assert path.read_text() == text, f"{path.relative_to(REPO)} is stale: run python deploy/kubernetes/generate.py"


def test_prometheus_rule_is_the_rules_file(base: list[dict[str, Any]]) -> None:
    rule = one(base, "PrometheusRule", "keylife")
    assert rule["spec"]["groups"] == load_yaml(REPO / "alert_rules" / "keylife.rules.yml")["groups"]


def test_every_dashboard_is_a_sidecar_configmap(base: list[dict[str, Any]]) -> None:
    maps = {
        m["metadata"]["name"]: m for m in by_kind(base, "ConfigMap") if "grafana_dashboard" in m["metadata"]["labels"]
    }
    files = sorted((REPO / "dashboards" / "json").glob("*.json"))
    assert sorted(maps) == [f"grafana-dashboard-{f.stem}" for f in files]
    for path in files:
        cm = maps[f"grafana-dashboard-{path.stem}"]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"][path.name]) == GENERATE["provisioned"](json.loads(path.read_text()))
        # The sidecar provisions files as they are: it does no __inputs substitution on import.
        assert "${DS_" not in cm["data"][path.name], f"{path.name}: an import-only placeholder would stay unresolved"


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_every_resource_passes_its_schema(which: str, request: pytest.FixtureRequest) -> None:
    resources = request.getfixturevalue(which)
    kinds = {r["kind"] for r in resources}
    assert {"StatefulSet", "Service", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    errors = [error for resource in resources for error in validation_errors(resource)]
    assert errors == []


def test_schema_validation_catches_mistakes(base: list[dict[str, Any]]) -> None:
    """The validators have teeth: a typo in a CRD field and a wrong type in a core kind both fail."""
    monitor = json.loads(json.dumps(one(base, "ServiceMonitor", "keylife")))
    monitor["spec"]["endpoints"][0]["scrapeTimout"] = "10s"
    assert any("scrapeTimout" in e for e in validation_errors(monitor))
    sts = json.loads(json.dumps(one(base, "StatefulSet", "keylife")))
    sts["spec"]["replicas"] = "one"
    assert validation_errors(sts)


def test_one_writer_with_its_volume_and_probes(overlay: list[dict[str, Any]]) -> None:
    sts = one(overlay, "StatefulSet", "keylife")
    assert sts["spec"]["replicas"] == 1
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"  # the overlay's patch
    (main,) = sts["spec"]["template"]["spec"]["containers"]
    assert main["args"][0] == "serve"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {m["mountPath"] for m in main["volumeMounts"]} >= {"/var/lib/keylife", "/etc/keylife/secrets"}
    assert main["image"] == "registry.example.com/keylife:0.1.0"


def test_service_and_monitor_reach_the_pod(overlay: list[dict[str, Any]]) -> None:
    """The Service selects the StatefulSet's pods on a named port the container has; the ServiceMonitor
    selects the Service and scrapes that port, so the job label is the Service name the rules match."""
    sts = one(overlay, "StatefulSet", "keylife")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    service = one(overlay, "Service", "keylife")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for c in sts["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    monitor = one(overlay, "ServiceMonitor", "keylife")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service["spec"]["ports"][0]["name"]]
    rules = one(overlay, "PrometheusRule", "keylife")
    exprs = " ".join(r["expr"] for g in rules["spec"]["groups"] for r in g["rules"])
    jobs = {job for matcher in re.findall(r'job=~?"([^"]*)"', exprs) for job in matcher.split("|")}
    # prometheus-operator's job label is the Service name: every job the rules match is scraped.
    scraped = {s["metadata"]["name"] for s in by_kind(overlay, "Service")}
    assert jobs and jobs <= scraped, jobs - scraped
    for selected in (monitor, rules):
        assert selected["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_forwarder_shares_the_journal_read_only(overlay: list[dict[str, Any]]) -> None:
    deployment = one(overlay, "Deployment", "keylife-forward")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    (forward,) = spec["template"]["spec"]["containers"]
    assert forward["args"][0] == "forward"
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    journal = volumes["journal"]["persistentVolumeClaim"]
    sts = one(overlay, "StatefulSet", "keylife")
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert journal == {"claimName": f"{claim}-{sts['metadata']['name']}-0", "readOnly": True}
    affinity = spec["template"]["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert affinity[0]["labelSelector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    serve_config = yaml.safe_load(next(iter(one_config(overlay, "keylife-config").values())))
    assert serve_config["forwarder"]["sinks"] == []  # shipped by one of them only


def one_config(resources: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    (cm,) = [r for r in by_kind(resources, "ConfigMap") if r["metadata"]["name"].startswith(prefix + "-")]
    return cm["data"]


def _pods(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["spec"]["template"]["spec"] for r in resources if r["kind"] in ("StatefulSet", "Deployment")]


def test_secrets_reach_keylife_as_0600_copies(overlay: list[dict[str, Any]]) -> None:
    """fsGroup (needed for the data volume) makes Secret files 0440, which keylife refuses: the
    Secret is mounted in the init container only, which copies it 0600 into a memory emptyDir."""
    for pod in _pods(overlay):
        secret_volumes = {v["name"] for v in pod["volumes"] if "secret" in v}
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
        for container in pod["containers"]:
            assert not secret_volumes & {m["name"] for m in container["volumeMounts"]}, "keylife would refuse 0440"
        (init,) = pod["initContainers"]
        assert secret_volumes <= {m["name"] for m in init["volumeMounts"]}
        assert "install -m 0600" in init["command"][-1]


def test_init_command_makes_files_keylife_accepts(tmp_path: Path, overlay: list[dict[str, Any]]) -> None:
    """The init container's own command, run over a Secret volume laid out as kubelet writes it
    (files behind ..data symlinks, 0440 under fsGroup), yields files keylife's secret rule accepts."""
    from keylife.common.secret_files import SecretFileError, check_secret_file

    (init,) = _pods(overlay)[0]["initContainers"]
    source, dest = tmp_path / "secret-source", tmp_path / "secrets"
    (source / "..2026_01_01").mkdir(parents=True)
    dest.mkdir()
    for name in ("journal-signing.key", "admin.token"):
        real = source / "..2026_01_01" / name
        real.write_text("secret\n")
        real.chmod(0o440)
        (source / name).symlink_to(Path("..data") / name)
    (source / "..data").symlink_to("..2026_01_01")
    with pytest.raises(SecretFileError):
        check_secret_file(source / "admin.token", "token file")
    command = init["command"][-1].replace("/etc/keylife/secret-source", str(source))
    command = command.replace("/etc/keylife/secrets", str(dest))
    subprocess.run(["sh", "-c", command], check=True, timeout=30)
    assert sorted(p.name for p in dest.iterdir()) == ["admin.token", "journal-signing.key"]
    for path in dest.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
        check_secret_file(path, "secret")


def _serve(config: Path, data: Path, secrets: Path, ready: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KEYLIFE_DATA_DIR": str(data),
        "KEYLIFE_JOURNAL__SIGNING_KEY": str(secrets / "journal-signing.key"),
        "KEYLIFE_API__TOKEN_FILE": str(secrets / "admin.token"),
    }
    keylife = Path(sys.executable).with_name("keylife")
    args = [str(keylife), "serve", "--config", str(config), "--host", "127.0.0.1", "--port", "0"]
    return subprocess.Popen(
        [*args, "--ready-file", str(ready)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


@pytest.mark.slow
def test_keylife_serves_with_the_overlay_config(tmp_path: Path, overlay: list[dict[str, Any]]) -> None:
    """The rendered keylife.yaml starts a real keylife serve (paths mapped to a temp dir): refused
    with the 0440 files fsGroup produces, ready on /readyz with the init container's 0600 copies."""
    import urllib.request

    config = tmp_path / "keylife.yaml"
    config.write_text(one_config(overlay, "keylife-config")["keylife.yaml"])
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    k8s = overlay_copy(tmp_path / "copy")
    for name in ("journal-signing.key", "admin.token"):
        (secrets / name).write_bytes((k8s / "overlays" / "example" / "secrets" / name).read_bytes())
        (secrets / name).chmod(0o440)
    refused = _serve(config, tmp_path / "data", secrets, tmp_path / "ready.json")
    out, _ = refused.communicate(timeout=60)
    assert refused.returncode != 0
    assert b"journal-signing.key" in out or b"admin.token" in out, out.decode(errors="replace")
    for path in secrets.iterdir():
        path.chmod(0o600)
    process = _serve(config, tmp_path / "data", secrets, tmp_path / "ready.json")
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready.json").exists():
            assert process.poll() is None, process.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        url = json.loads((tmp_path / "ready.json").read_text())["url"]
        for _ in range(100):
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=5) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("/readyz never answered 200")
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_generate_check_passes() -> None:
    """``generate.py --check`` is what a contributor runs before committing (exit 1 names a stale file)."""
    done = subprocess.run([sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_shipped_alertmanagerconfig_passes_its_crd_schema() -> None:
    """alert_rules/alertmanager/alertmanagerconfig.yaml is what prometheus-operator users apply:
    it must be a valid v1alpha1 AlertmanagerConfig, unknown fields refused, and a typo must fail."""
    resource = load_yaml(REPO / "alert_rules" / "alertmanager" / "alertmanagerconfig.yaml")
    assert resource["apiVersion"] == "monitoring.coreos.com/v1alpha1"
    assert validation_errors(resource) == []
    broken = json.loads(json.dumps(resource))
    broken["spec"]["route"]["groupWaitt"] = "30s"
    assert any("groupWaitt" in e for e in validation_errors(broken))
