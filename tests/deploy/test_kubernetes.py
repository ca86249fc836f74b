"""deploy/: the kustomize base and its CPU/GPU overlays, rendered with `kubectl kustomize`,
validated against the Kubernetes schemas (kubernetes-validate, offline), and cross-checked
against the image and the service."""

from __future__ import annotations

import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from service.keys import Authenticator, digest
from service.protocols.routes import ROUTES
from service.settings import Settings
from tests.deploy.dockerfile import env_of, parse
from tests.helpers import ROOT

K8S_VERSION = "1.31.0"
DEPLOY = ROOT / "deploy"
_, STAGES = parse(ROOT / "Dockerfile")
IMAGE_ENV = env_of(STAGES[-1])


def render(overlay: str) -> dict[str, dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is missing"
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {doc["kind"]: doc for doc in yaml.safe_load_all(out.stdout)}


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def rendered(request):
    return request.param, render(request.param)


def _container(objects):
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _env(container) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def test_base_files_validate_strictly():
    for path in sorted((DEPLOY / "base").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_rendered_overlays_validate_strictly(rendered):
    _, objects = rendered
    assert set(objects) == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for doc in objects.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_catches_mistakes(rendered):
    _, objects = rendered
    broken = yaml.safe_load(yaml.safe_dump(objects["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["resoures"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="resoures"):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_probes_ports_and_scrape_annotations_match_the_service(rendered):
    _, objects = rendered
    container = _container(objects)
    rules = {r.template for r in ROUTES if r.method == "GET"}
    port = int(IMAGE_ENV["SERVING_BIND"].rsplit(":", 1)[1])
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in rules
        assert container[probe]["httpGet"]["port"] == "http"
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] in rules
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == "http"


def test_selectors_and_targets_line_up(rendered):
    _, objects = rendered
    deployment = objects["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        objects["Service"]["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"],
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] <= hpa["minReplicas"]


def test_graceful_termination_and_security(rendered):
    _, objects = rendered
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = _container(objects)
    graceful = int(
        _env(container).get("SERVING_GRACEFUL_TIMEOUT", IMAGE_ENV["SERVING_GRACEFUL_TIMEOUT"])
    )
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + graceful
    (user,) = STAGES[-1].all("USER")
    assert pod["securityContext"]["runAsUser"] == int(user.split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert IMAGE_ENV["SERVING_METRICS_DIR"].startswith(tuple(m + "/" for m in mounts))


def test_workers_and_threads_fit_the_cpu_limit(rendered):
    _, objects = rendered
    container = _container(objects)
    env = _env(container)
    cpu_limit = float(container["resources"]["limits"]["cpu"])
    assert int(env["SERVING_WORKERS"]) * int(env["SERVING_INTRA_OP_THREADS"]) <= cpu_limit


def test_gpu_overlay_requests_a_gpu_and_cpu_overlay_does_not(rendered):
    overlay, objects = rendered
    container = _container(objects)
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert container["image"].endswith(f":{overlay}")
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == "1"
        assert _env(container)["SERVING_PROVIDERS"].startswith("CUDAExecutionProvider")
        tolerations = objects["Deployment"]["spec"]["template"]["spec"]["tolerations"]
        assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
    else:
        assert "nvidia.com/gpu" not in limits
        assert "SERVING_PROVIDERS" not in _env(container)


def test_api_keys_are_on_with_the_file_from_a_secret(rendered):
    _, objects = rendered
    container = _container(objects)
    path = _env(container)["SERVING_API_KEYS_FILE"]
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "keras-serving-api-keys"


def test_metrics_need_a_key_where_keys_are_on(rendered, tmp_path):
    _, objects = rendered
    env = {**IMAGE_ENV, **_env(_container(objects))}
    assert env["SERVING_METRICS_AUTH"] == "true"
    settings = Settings.from_env(env)  # as the service reads the pod's environment
    assert settings.api_keys_file
    assert settings.metrics_auth is True
    keys_file = tmp_path / "keys.txt"  # the Secret's file
    keys_file.write_text(f"prometheus:{digest('ksk_scraper')}:read\n")
    auth = Authenticator(str(keys_file), settings.metrics_auth)
    (scrape,) = [r for r in ROUTES if r.template == "/metrics"]
    assert auth.requires(scrape.scope)
