"""MLServer and KServe's Python model server as benchmark peers: their virtual environments,
command lines and Open Inference Protocol (V2) routes (``bench.harness.systems`` lists them).

Both serve models/fashion-mnist/1 and models/circles/1 through a custom runtime around
``bench.systems.onnx_classifier`` (the service's session options and post-processing), with
the harness's worker count, and take the V2 JSON bodies the service takes.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# uvloop 0.22 breaks MLServer 1.7's inference workers at start (SeldonIO/MLServer#2286).
REQUIREMENTS = {
    "mlserver": ["mlserver==1.7.*", "uvloop<0.22", "onnxruntime==1.31.*", "numpy"],
    "kserve": ["kserve==0.21.*", "onnxruntime==1.31.*", "numpy"],
}
VENVS = {name: ROOT / "bench" / f".venv-{name}" for name in REQUIREMENTS}
READY_PATH = "/v2/health/ready"
MLSERVER_DESCRIPTION = (
    "MLServer 1.7, custom runtime with onnxruntime, same post-processing and V2 outputs: one "
    "HTTP front process (uvicorn) handing requests to 2 inference worker processes "
    "(parallel_workers); its defaults otherwise (access log, metrics server, gRPC), bound "
    "to 127.0.0.1"
)
KSERVE_DESCRIPTION = (
    "KServe 0.21 Python ModelServer, custom kserve.Model with onnxruntime, same "
    "post-processing and V2 outputs: 2 uvicorn worker processes (--workers) under a parent "
    "that holds the socket and the gRPC server; its defaults otherwise (access and latency "
    "logs, metrics); it binds 0.0.0.0 (hard-coded)"
)

log = logging.getLogger("bench")


def ensure_venv(name: str) -> Path:
    """The peer's own virtual environment, made (or remade when its pins change) on first use."""
    venv, requirements = VENVS[name], REQUIREMENTS[name]
    marker = venv / "bench-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return venv
    log.info("creating %s with %s", venv, " ".join(requirements))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *requirements], check=True)
    marker.write_text(wanted)
    return venv


def circles_v2_json(vector_body: bytes) -> bytes:
    """The circles workload's ``{"instances": [[x, y], ...]}`` as a V2 JSON FP32 tensor."""
    rows = json.loads(vector_body)["instances"]
    data = [float(v) for row in rows for v in row]
    tensor = {"name": "input", "datatype": "FP32", "shape": [len(rows), 2], "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


def v2_routes(bodies: dict[str, bytes]) -> dict[str, tuple[str, str, bytes, dict[str, str]]]:
    """The V2 JSON workload, and a circles request as the readiness probe ("probe": not a
    workload, so the circles workload, native JSON elsewhere, is not run on V2 bodies)."""
    return {
        "fashion-v2-json": (
            "/v2/models/fashion-mnist/infer",
            "application/json",
            bodies["v2-json"],
            {},
        ),
        "probe": (
            "/v2/models/circles/infer",
            "application/json",
            circles_v2_json(bodies["vector"]),
            {},
        ),
    }


def mlserver_command() -> list[str]:
    """``mlserver start`` over the committed model-settings.json files."""
    return [
        str(VENVS["mlserver"] / "bin" / "mlserver"),
        "start",
        str(ROOT / "bench" / "systems" / "mlserver"),
    ]


def mlserver_env(port: int, workers: int, metrics_dir: Path) -> dict[str, str]:
    """MLServer's settings: its gRPC and metrics servers on port + 1000 and port + 2000, its
    multiprocess metrics and (unused) environments under the run's folder, not the cwd."""
    return {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(port),
        "MLSERVER_GRPC_PORT": str(port + 1000),
        "MLSERVER_METRICS_PORT": str(port + 2000),
        "MLSERVER_PARALLEL_WORKERS": str(workers),
        "MLSERVER_METRICS_DIR": str(metrics_dir),
        "MLSERVER_ENVIRONMENTS_DIR": str(metrics_dir / "environments"),
    }


def kserve_command(port: int, workers: int) -> list[str]:
    """KServe's ModelServer with its own flags; gRPC on port + 1000."""
    return [
        str(VENVS["kserve"] / "bin" / "python"),
        "-m",
        "bench.systems.kserve_server",
        "--http_port",
        str(port),
        "--grpc_port",
        str(port + 1000),
        "--workers",
        str(workers),
    ]
