"""deploy/: Kubernetes manifests against the Kubernetes schemas, the compose file against the compose
spec, the Dockerfile through hadolint, and all of them against the code (settings, routes, metrics)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import generate_latest

from app.ops.metrics import GatewayMetrics
from app.settings import OPTIONS
from engine.embedded import EmbeddedEngine
from engine.service import SpeechService
from tests.server import ROOT

DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30.0"  # oldest version the manifests target (the preStop sleep action is on from 1.30)
SETTING_ENVS = {option.env for option in OPTIONS}


def manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def by_kind(kind: str) -> dict:
    [doc] = [doc for _, doc in manifests() if doc["kind"] == kind]
    return doc


def container() -> dict:
    [gateway] = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return gateway


@pytest.mark.parametrize(("name", "doc"), manifests(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifest_matches_the_kubernetes_schema(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest():
    broken = json.loads(json.dumps(by_kind("Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_deployment_probes_gpu_and_shared_voices():
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    gateway = container()
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["resources"]["requests"]["nvidia.com/gpu"] == gateway["resources"]["limits"]["nvidia.com/gpu"]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    assert mounts["voices"] == env["SPEECH_GATEWAY_VOICES_DIR"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    pvcs = {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == "PersistentVolumeClaim"}
    assert pvcs[claims["voices"]]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert all(env[k].startswith("/models/") for k in ("SPEECH_GATEWAY_QWEN_BASE", "SPEECH_GATEWAY_QWEN_CUSTOM_VOICE"))
    # SIGKILL must come after the gateway's own grace period (plus the preStop pause).
    assert pod["terminationGracePeriodSeconds"] > float(env["SPEECH_GATEWAY_SHUTDOWN_GRACE"]) + 5
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_probe_paths_are_documented_routes():
    paths = json.loads((ROOT / "openapi" / "openapi.json").read_text())["paths"]
    gateway = container()
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert gateway[probe]["httpGet"]["path"] in paths
    annotations = by_kind("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in paths


def test_service_reaches_the_container_port():
    service = by_kind("Service")
    port_names = {p["name"] for p in container()["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    assert service["spec"]["selector"].items() <= by_kind("Deployment")["spec"]["template"]["metadata"]["labels"].items()


def test_autoscaler_metric_is_one_the_gateway_exports():
    metric = by_kind("HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert metric in by_kind("ConfigMap")["data"]["config.yaml"]
    metrics = GatewayMetrics()
    metrics.bind(SpeechService([EmbeddedEngine()]))  # admission queues exist before any model loads
    exposition = generate_latest(metrics.registry).decode()
    assert re.search(rf"^{metric}{{engine=\"embedded\"}} 0\.0$", exposition, re.M), exposition


def test_every_gateway_variable_is_a_setting():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    used = {e["name"] for e in container()["env"]} | set(compose["services"]["gateway"]["environment"])
    used |= set(re.findall(r"\b(SPEECH_GATEWAY_[A-Z_]+)=", dockerfile))
    unknown = {name for name in used if name.startswith("SPEECH_GATEWAY_")} - SETTING_ENVS
    assert not unknown, f"not settings (typo?): {sorted(unknown)}"


def test_compose_file_matches_the_compose_spec():
    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
                        .read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(compose)
    gateway = compose["services"]["gateway"]
    [gpu] = gateway["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["capabilities"] == ["gpu"]
    assert any(v["target"] == gateway["environment"]["SPEECH_GATEWAY_VOICES_DIR"] and v["type"] == "volume"
               for v in gateway["volumes"])
    grace = float(gateway["environment"]["SPEECH_GATEWAY_SHUTDOWN_GRACE"])
    assert float(gateway["stop_grace_period"].rstrip("s")) > grace


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape():
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages[-1].startswith("nvidia/cuda:") and "runtime" in stages[-1]
    assert '".[qwen,cuda]"' in text
    user = re.findall(r"^USER (\S+)", text, re.M)[-1]
    assert user.split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    # Models are mounted, never copied or downloaded into the image.
    assert not re.search(r"^(COPY|ADD) .*models", text, re.M | re.I)
    assert "HF_HUB_OFFLINE=1" in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert ignore.splitlines()[1] == "*"  # everything excluded, then the sources listed back in
