"""deploy/kserve: the KServe InferenceService (custom predictor, Open Inference Protocol V2),
rendered with `kubectl kustomize` and checked against KServe's rules for custom predictors,
the Kubernetes schemas (its pod spec) and the service itself."""

from __future__ import annotations

import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from service.protocols.routes import ROUTES
from service.settings import Settings
from tests.deploy.dockerfile import env_of, parse
from tests.deploy.test_kubernetes import K8S_VERSION
from tests.helpers import ROOT

_, STAGES = parse(ROOT / "Dockerfile")
IMAGE_ENV = env_of(STAGES[-1])
# KServe's ComponentExtensionSpec: what a predictor holds beside its (inline) pod spec.
EXTENSION_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "autoScaling",
}


@pytest.fixture(scope="module")
def service() -> dict:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is missing"
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "kserve")],
        capture_output=True,
        text=True,
        check=True,
    )
    (document,) = yaml.safe_load_all(out.stdout)
    return document


def _container(service):
    containers = service["spec"]["predictor"]["containers"]
    (container,) = [c for c in containers if c["name"] == "kserve-container"]
    assert containers[0] is container  # KServe reads PROTOCOL from the first container
    return container


def _env(container) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_an_inference_service_with_a_v2_custom_predictor(service):
    assert (service["apiVersion"], service["kind"]) == (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    )
    predictor = service["spec"]["predictor"]
    assert set(service["spec"]) == {"predictor"}
    assert not {"model", "sklearn", "onnx", "triton", "tensorflow"} & set(predictor)
    container = _container(service)
    assert _env(container)["PROTOCOL"] == "v2"  # KServe accepts v1 or v2 here
    assert container["image"] == "registry.example.com/keras-serving:cpu"
    mode = service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    assert mode in ("RawDeployment", "Serverless")
    assert 1 <= predictor["minReplicas"] < predictor["maxReplicas"]


def test_the_pod_spec_validates_strictly(service):
    predictor = service["spec"]["predictor"]
    pod_spec = {k: v for k, v in predictor.items() if k not in EXTENSION_FIELDS}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_spec}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(pod))
    broken["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_settings_port_and_probes_match_the_service(service):
    container = _container(service)
    env = _env(container)
    serving = {k: v for k, v in env.items() if k.startswith("SERVING_")}
    settings = Settings.from_env(serving)  # every variable is a real, well-formed setting
    assert set(serving) <= set(settings.describe())
    port = int(settings.bind.rsplit(":", 1)[1])
    assert container["ports"] == [{"containerPort": port, "protocol": "TCP"}]
    v2_gets = {r.template for r in ROUTES if r.method == "GET" and r.template.startswith("/v2")}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    assert {"/v2/health/ready", "/v2/health/live"} <= v2_gets
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == str(port)
    assert annotations["prometheus.kserve.io/path"] in {r.template for r in ROUTES}


def test_resources_security_and_termination(service):
    predictor = service["spec"]["predictor"]
    container = _container(service)
    env = _env(container)
    cpu_limit = float(container["resources"]["limits"]["cpu"])
    assert int(env["SERVING_WORKERS"]) * int(env["SERVING_INTRA_OP_THREADS"]) <= cpu_limit
    assert predictor["terminationGracePeriodSeconds"] > int(env["SERVING_GRACEFUL_TIMEOUT"])
    (user,) = STAGES[-1].all("USER")
    assert predictor["securityContext"]["runAsUser"] == int(user.split(":")[0])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert IMAGE_ENV["SERVING_METRICS_DIR"].startswith(tuple(m + "/" for m in mounts))


def test_api_keys_are_on_with_the_file_from_a_secret(service):
    container = _container(service)
    path = _env(container)["SERVING_API_KEYS_FILE"]
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    volumes = service["spec"]["predictor"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "keras-serving-api-keys"
