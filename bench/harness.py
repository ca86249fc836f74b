"""Run every system on every workload with wrk; write results.json, results.md and a plot.

python -m bench                 # the full run (10 s a point, all systems), bench/results/
python -m bench --quick ...     # seconds a point, for the test suite
python -m bench --baseline REF  # also this service as of git REF, in the same rounds
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench import peers

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "bench" / "lua" / "post.lua"
BENTO_VENV = ROOT / "bench" / ".venv-bentoml"
BENTO_REQUIREMENTS = ["bentoml==1.4.*", "onnxruntime==1.31.*", "numpy", "pillow"]
WORKERS = 2  # the same for every server
BATCH = 64  # images in one batched request
THREADS = 2  # per gunicorn worker, the same for every gunicorn server (--threads)

log = logging.getLogger("bench")


@dataclass(frozen=True)
class Workload:
    """One request shape, spelled per system."""

    name: str
    description: str
    images: int = 1  # instances per request: images/s is req/s times this


WORKLOADS = {
    "fashion-json": Workload("fashion-json", "a Fashion-MNIST image as a JSON pixel array"),
    "fashion-png": Workload("fashion-png", "the same image as a PNG upload"),
    "circles": Workload("circles", "a circles feature vector as JSON"),
    "fashion-v2-binary": Workload(
        "fashion-v2-binary",
        "the same image as an Open Inference Protocol (V2) binary FP32 tensor, all outputs "
        "in binary (what tritonclient sends by default)",
    ),
    "fashion-v2-json": Workload(
        "fashion-v2-json", "the same image as a V2 JSON FP32 tensor, outputs as JSON"
    ),
    "fashion-json-64": Workload(
        "fashion-json-64",
        f"{BATCH} Fashion-MNIST test images in one request, as JSON pixel arrays",
        BATCH,
    ),
    "fashion-v2-binary-64": Workload(
        "fashion-v2-binary-64",
        f"the same {BATCH} images as one V2 binary FP32 tensor "
        f"[{BATCH}, 28, 28, 1], outputs in binary",
        BATCH,
    ),
}
V2_HEADER = "Inference-Header-Content-Length"


@dataclass
class System:
    """An HTTP server under test: how to start it and where each workload goes."""

    name: str
    description: str
    command: list[str]
    env: dict[str, str]
    ready_path: str
    # workload -> (path, content type, body, extra headers)
    routes: dict[str, tuple[str, str, bytes, dict[str, str]]] = field(default_factory=dict)
    cwd: Path = ROOT


@functools.cache
def dataset(name: str):
    """A training dataset, loaded once per run (bodies and the limit both need it)."""
    from training.datasets import load

    return load(name)


def payloads() -> dict[str, bytes]:
    """The request bodies: a real Fashion-MNIST test image and a circles test vector."""
    from PIL import Image

    images = dataset("fashion-mnist").x_test[:BATCH].astype(np.uint8)
    image = images[0]
    vector = dataset("circles").x_test[0].tolist()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    tensor = (image.astype(np.float32) / 255.0).reshape(1, 28, 28, 1)
    header, raw = _v2_binary(tensor)
    header64, raw64 = _v2_binary((images.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1))
    v2_json = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [1, 28, 28, 1],
                "data": tensor.ravel().tolist(),
            }
        ]
    }
    return {
        "pixels": json.dumps({"instances": [image.tolist()]}).encode(),
        "png": buffer.getvalue(),
        "vector": json.dumps({"instances": [vector]}).encode(),
        "v2-binary": header + raw,
        "v2-binary-header": str(len(header)).encode(),
        "v2-json": json.dumps(v2_json).encode(),
        "pixels-64": json.dumps({"instances": images.tolist()}).encode(),
        "v2-binary-64": header64 + raw64,
        "v2-binary-64-header": str(len(header64)).encode(),
    }


def _v2_binary(tensor: np.ndarray) -> tuple[bytes, bytes]:
    """A V2 request for one FP32 tensor as binary data, all outputs asked in binary (what
    tritonclient sends): (JSON header, tensor bytes)."""
    raw = tensor.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(tensor.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header, raw


def _multipart(field_name: str, filename: str, data: bytes) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; '
        f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def systems(
    port: int,
    bodies: dict[str, bytes],
    metrics_dir: Path,
    threads: int = THREADS,
    baseline: Path | None = None,
) -> dict[str, System]:
    """Every HTTP system, configured for 2 workers on the given port (``baseline``: a
    checkout of this service at another commit, served from there)."""
    venv_bin = Path(sys.executable).parent
    gunicorn = [
        str(venv_bin / "gunicorn"),
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        str(WORKERS),
        "-k",
        "gthread",
        "--threads",
        str(threads),
        "--log-level",
        "warning",
    ]
    flask_routes = {
        "fashion-json": ("/fashion/json", "application/json", bodies["pixels"], {}),
        "fashion-json-64": ("/fashion/json", "application/json", bodies["pixels-64"], {}),
        "fashion-png": ("/fashion/png", "image/png", bodies["png"], {}),
        "circles": ("/circles", "application/json", bodies["vector"], {}),
    }
    service_env = {  # threads and batching: the service's own defaults
        "SERVING_BIND": f"127.0.0.1:{port}",
        "SERVING_WORKERS": str(WORKERS),
        "SERVING_METRICS_DIR": str(metrics_dir),
    }
    # Version 1 by name: the peers and the in-process limit load models/<name>/1 (Fashion-MNIST
    # v2 is mirror-averaged, twice the work an image).
    fashion = "/predict?model=fashion-mnist&version=1"
    service_routes = {
        "fashion-json": (fashion, "application/json", bodies["pixels"], {}),
        "fashion-png": (fashion, "image/png", bodies["png"], {}),
        "circles": ("/predict?model=circles&version=1", "application/json", bodies["vector"], {}),
        "fashion-v2-binary": (
            "/v2/models/fashion-mnist/versions/1/infer",
            "application/octet-stream",
            bodies["v2-binary"],
            {V2_HEADER: bodies["v2-binary-header"].decode()},
        ),
        "fashion-v2-json": (
            "/v2/models/fashion-mnist/versions/1/infer",
            "application/json",
            bodies["v2-json"],
            {},
        ),
        "fashion-json-64": (fashion, "application/json", bodies["pixels-64"], {}),
        "fashion-v2-binary-64": (
            "/v2/models/fashion-mnist/versions/1/infer",
            "application/octet-stream",
            bodies["v2-binary-64"],
            {V2_HEADER: bodies["v2-binary-64-header"].decode()},
        ),
    }
    has_v2 = baseline is not None and (baseline / "service" / "protocols" / "v2.py").exists()
    baseline_routes = {k: v for k, v in service_routes.items() if has_v2 or "v2" not in k}
    png_type, png_multipart = _multipart("image", "image.png", bodies["png"])
    found = {
        "service": System(
            "service",
            "this service as the README starts it (its defaults: "
            "one thread per worker, dynamic batching off)",
            [str(venv_bin / "gunicorn"), "-c", "gunicorn.conf.py"],
            service_env,
            "/health/ready",
            service_routes,
        ),
        "service-batching": System(
            "service-batching",
            f"this service with dynamic batching on "
            f"and {threads} threads per worker (requests in flight "
            "together, to combine)",
            [str(venv_bin / "gunicorn"), "-c", "gunicorn.conf.py"],
            {**service_env, "SERVING_BATCHING": "true", "SERVING_THREADS": str(threads)},
            "/health/ready",
            service_routes,
        ),
        "minimal": System(
            "minimal",
            "minimal Flask + gunicorn + onnxruntime (no validation, metrics or logs)",
            [*gunicorn, "bench.systems.minimal_app:app"],
            {},
            None,
            flask_routes,
        ),
        "keras": System(
            "keras",
            "naive baseline: Flask calling Keras model.predict",
            [*gunicorn, "bench.systems.keras_app:app"],
            {"TF_CPP_MIN_LOG_LEVEL": "3"},
            None,
            flask_routes,
        ),
        "bentoml": System(
            "bentoml",
            "BentoML 1.4 with onnxruntime, same post-processing",
            [
                str(BENTO_VENV / "bin" / "bentoml"),
                "serve",
                "bench.systems.bentoml_service:Classifier",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            {"BENTOML_DO_NOT_TRACK": "true"},
            "/readyz",
            {
                "fashion-json": ("/fashion_json", "application/json", bodies["pixels"], {}),
                "fashion-png": ("/fashion_png", png_type, png_multipart, {}),
                "fashion-json-64": ("/fashion_json", "application/json", bodies["pixels-64"], {}),
                "circles": ("/circles", "application/json", bodies["vector"], {}),
            },
        ),
        "mlserver": System(
            "mlserver",
            peers.MLSERVER_DESCRIPTION,
            peers.mlserver_command(),
            peers.mlserver_env(port, WORKERS, metrics_dir),
            peers.READY_PATH,
            peers.v2_routes(bodies),
        ),
        "kserve": System(
            "kserve",
            peers.KSERVE_DESCRIPTION,
            peers.kserve_command(port, WORKERS),
            {},
            peers.READY_PATH,
            peers.v2_routes(bodies),
        ),
    }
    if baseline is not None:
        found["baseline"] = System(
            "baseline",
            f"this service as of commit {baseline.name} (its defaults then)",
            [str(venv_bin / "gunicorn"), "-c", "gunicorn.conf.py"],
            {**service_env, "SERVING_MODEL_REPOSITORY": str(ROOT / "models")},
            "/health/ready",
            baseline_routes,
            cwd=baseline,
        )
    return found


def baseline_checkout(ref: str) -> Path:
    """A detached git worktree of this repository at ``ref`` (reused when it exists)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", f"{ref}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = ROOT / "bench" / ".worktrees" / commit
    if not path.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), commit],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return path


def ensure_bentoml_venv() -> None:
    """BentoML gets its own virtual environment (its dependencies clash with ours)."""
    if (BENTO_VENV / "bin" / "bentoml").exists():
        return
    log.info("creating %s with %s", BENTO_VENV, " ".join(BENTO_REQUIREMENTS))
    subprocess.run([sys.executable, "-m", "venv", str(BENTO_VENV)], check=True)
    subprocess.run(
        [str(BENTO_VENV / "bin" / "pip"), "install", "--quiet", *BENTO_REQUIREMENTS], check=True
    )


def _post(url: str, ctype: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": ctype, **headers}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


@contextmanager
def running(system: System, port: int, log_dir: Path) -> Iterator[dict]:
    """Start a system, wait until it answers, yield facts about it, stop it."""
    env = {**os.environ, **system.env, "PYTHONPATH": str(system.cwd)}
    log_file = (log_dir / f"{system.name}.log").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        system.command, cwd=system.cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
    facts: dict = {}
    try:
        base = f"http://127.0.0.1:{port}"
        path, ctype, body, headers = system.routes.get("probe") or system.routes["circles"]
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{system.name} exited; see {log_file.name}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{system.name} not ready in 180 s")
            try:
                if system.ready_path:
                    urllib.request.urlopen(base + system.ready_path, timeout=2).close()
                if _post(base + path, ctype, body, headers) == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        facts["start_to_ready_s"] = round(time.perf_counter() - started, 3)
        facts["pid"] = process.pid
        yield facts
    finally:
        stop(process, 30)
        log_file.close()


def stop(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it is not gone within ``timeout`` s."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


def worker_rss_mb(master_pid: int) -> list[float]:
    """Resident memory of each child of a process (gunicorn's workers), in MB."""
    sizes = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields_ = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields_.get("PPid", "").strip() == str(master_pid):
            sizes.append(round(int(fields_["VmRSS"].split()[0]) / 1024, 1))
    return sorted(sizes)


def wrk(
    url: str,
    ctype: str,
    body_file: Path,
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
) -> dict:
    """One wrk run; the Lua script prints a JSON summary."""
    threads = min(2, concurrency)
    env = {
        **os.environ,
        "BENCH_BODY": str(body_file),
        "BENCH_CONTENT_TYPE": ctype,
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items()),
    }
    steal_before, total_before = cpu_ticks()
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(li for li in out.stdout.splitlines() if li.startswith("{"))
    steal_after, total_after = cpu_ticks()
    steal_pct = 100 * (steal_after - steal_before) / max(1, total_after - total_before)
    raw = json.loads(line)
    seconds_run = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    return {
        "concurrency": concurrency,
        "requests": raw["requests"],
        "rps": round(raw["requests"] / seconds_run, 1),
        "p50_ms": raw["latency_us"]["p50"] / 1000,
        "p90_ms": raw["latency_us"]["p90"] / 1000,
        "p99_ms": raw["latency_us"]["p99"] / 1000,
        "errors": errors,
        "steal_pct": round(steal_pct, 1),
    }


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies from /proc/stat: time the hypervisor gave to other guests."""
    fields_ = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields_[7] if len(fields_) > 7 else 0, sum(fields_)


def aggregate(rounds: list[dict]) -> dict:
    """One point from interleaved rounds: total throughput, median percentiles."""
    seconds = sum(r["requests"] / r["rps"] for r in rounds if r["rps"])
    requests = sum(r["requests"] for r in rounds)
    return {
        "concurrency": rounds[0]["concurrency"],
        "requests": requests,
        "rps": round(requests / seconds, 1) if seconds else 0.0,
        "p50_ms": float(np.median([r["p50_ms"] for r in rounds])),
        "p90_ms": float(np.median([r["p90_ms"] for r in rounds])),
        "p99_ms": float(np.median([r["p99_ms"] for r in rounds])),
        "errors": sum(r["errors"] for r in rounds),
        "rounds": len(rounds),
        # Each round's throughput, and their median: a round where the kernel handed most
        # connections to one gunicorn worker runs at about one core's speed, and one such
        # round moves the total a lot; the median is what a typical round did.
        "round_rps": [r["rps"] for r in rounds],
        "median_round_rps": float(np.median([r["rps"] for r in rounds])),
        "steal_pct": round(float(np.mean([r["steal_pct"] for r in rounds])), 1),
    }


def measure_limit(seconds: float) -> dict:
    """onnxruntime in-process, no HTTP: batch 1 in a loop and batch 64, per model, with
    onnxruntime's default threads; and Fashion-MNIST as each of the service's workers runs
    it, on one thread (what dynamic batching can gain per worker)."""
    import onnxruntime as ort

    from service.contract.preprocessing import features_to_tensor, pixels_to_tensor, spec_from_dict

    results = {}
    for name in ("fashion-mnist", "circles"):
        meta = json.loads((ROOT / "models" / name / "1" / "metadata.json").read_text())
        spec = spec_from_dict(meta["preprocessing"])
        ds = dataset(name)
        to_tensor = pixels_to_tensor if name == "fashion-mnist" else features_to_tensor
        x = to_tensor(ds.x_test[:64], spec)
        one_thread = ort.SessionOptions()
        one_thread.intra_op_num_threads = one_thread.inter_op_num_threads = 1
        runs = [("", None)] + ([("/1-thread", one_thread)] if name == "fashion-mnist" else [])
        for suffix, options in runs:
            session = ort.InferenceSession(
                str(ROOT / "models" / name / "1" / "model.onnx"),
                options,
                providers=["CPUExecutionProvider"],
            )
            for batch in (1, BATCH):
                feed = {"input": x[:batch]}
                for _ in range(20):
                    session.run(None, feed)
                calls, timings, deadline = 0, [], time.perf_counter() + seconds
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    session.run(None, feed)
                    timings.append(time.perf_counter() - t0)
                    calls += 1
                total = sum(timings)
                results[f"{name}/batch{batch}{suffix}"] = {
                    "instances_per_s": round(calls * batch / total, 1),
                    "calls_per_s": round(calls / total, 1),
                    "p50_ms": round(float(np.percentile(timings, 50)) * 1000, 4),
                    "p99_ms": round(float(np.percentile(timings, 99)) * 1000, 4),
                }
    return results


def run(args: argparse.Namespace) -> dict:
    """The whole benchmark; returns the results document."""
    out_dir: Path = args.output
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    bodies = payloads()
    body_dir = out_dir / "bodies"
    body_dir.mkdir(exist_ok=True)
    port = args.port
    baseline = baseline_checkout(args.baseline) if args.baseline else None
    catalogue = systems(port, bodies, out_dir / "metrics", args.threads, baseline)
    chosen = args.systems or [name for name in catalogue if name != "baseline"]
    if baseline is not None and "baseline" not in chosen:
        chosen.append("baseline")
    if "bentoml" in chosen:
        ensure_bentoml_venv()
    for name in (name for name in peers.VENVS if name in chosen):
        peers.ensure_venv(name)
    document = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "bench", *args.argv]),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": {
            "rounds_per_point": args.rounds,
            "seconds_per_point": args.seconds,
            "warmup_seconds": args.warmup,
            "concurrency": args.concurrency,
            "workers": WORKERS,
            "threads": args.threads,
            "workloads": args.workloads,
            "baseline": args.baseline,
        },
        "limit": {},
        "systems": {},
    }
    if not args.skip_limit:
        log.info("measuring the in-process onnxruntime limit")
        document["limit"] = measure_limit(max(1.0, args.seconds / 2))
    # Every system runs at once on its own port; each point interleaves them in rounds
    # (order alternating) so that the machine's noisy spells fall on all of them alike.
    per_round = max(1, math.ceil(args.seconds / args.rounds))
    with ExitStack() as stack:
        live: dict[str, tuple[System, int, dict]] = {}
        for offset, name in enumerate(chosen):
            system_port = port + offset
            system = systems(
                system_port, bodies, out_dir / f"metrics-{name}", args.threads, baseline
            )[name]
            log.info("starting %s on port %d", name, system_port)
            facts = stack.enter_context(running(system, system_port, out_dir / "logs"))
            live[name] = (system, system_port, facts)
            entry = {
                "description": system.description,
                "workloads": {},
                "start_to_ready_s": facts["start_to_ready_s"],
            }
            if name.startswith("service"):
                entry["worker_rss_mb"] = worker_rss_mb(facts["pid"])
            document["systems"][name] = entry
        for workload in args.workloads:
            targets_ = {}
            for name, (system, system_port, _) in live.items():
                if workload not in system.routes:  # e.g. the V2 workloads on other servers
                    continue
                path, ctype, body, headers = system.routes[workload]
                body_file = body_dir / f"{name}-{workload}.body"
                body_file.write_bytes(body)
                targets_[name] = (
                    f"http://127.0.0.1:{system_port}{path}",
                    ctype,
                    body_file,
                    headers,
                )
                wrk(*targets_[name], 8, args.warmup)  # warm-up, not recorded
            for concurrency in args.concurrency:
                rounds: dict[str, list[dict]] = {name: [] for name in targets_}
                for r in range(args.rounds):
                    order = list(targets_) if r % 2 == 0 else list(reversed(targets_))
                    for name in order:
                        rounds[name].append(wrk(*targets_[name], concurrency, per_round))
                for name, measured in rounds.items():
                    point = aggregate(measured)
                    document["systems"][name]["workloads"].setdefault(workload, []).append(point)
                    log.info(
                        "%s %s c=%d: %.0f req/s p50 %.2f ms p99 %.2f ms errors %d steal %.1f%%",
                        name,
                        workload,
                        concurrency,
                        point["rps"],
                        point["p50_ms"],
                        point["p99_ms"],
                        point["errors"],
                        point["steal_pct"],
                    )
        for name, (_, _, facts) in live.items():
            if name.startswith("service"):
                document["systems"][name]["worker_rss_mb_after"] = worker_rss_mb(facts["pid"])
    document["targets"] = targets(document)
    (out_dir / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown(document))
    plot(document, out_dir / "results.png")
    return document


def _point(document: dict, system: str, workload: str, concurrency: int) -> dict | None:
    points = document["systems"].get(system, {}).get("workloads", {}).get(workload, [])
    return next((p for p in points if p["concurrency"] == concurrency), None)


def _rps(point: dict) -> float:
    """A point's throughput: the median round's where rounds were run (see aggregate)."""
    return point.get("median_round_rps", point["rps"])


def targets(document: dict) -> list[dict]:
    """The issues' targets, measured in this run (concurrency 32 unless said)."""
    checks: list[dict] = []

    def check(label: str, measured: str, met: bool) -> None:
        checks.append({"target": label, "measured": measured, "met": bool(met)})

    def ratio(
        label: str,
        ours: tuple[str, str],
        theirs: tuple[str, str],
        factor: float,
        concurrency: int = 32,
    ) -> None:
        a, b = _point(document, *ours, concurrency), _point(document, *theirs, concurrency)
        if a and b and _rps(b):
            value = _rps(a) * WORKLOADS[ours[1]].images / (_rps(b) * WORKLOADS[theirs[1]].images)
            check(label, f"{value:.2f}x", value >= factor)

    ours = _point(document, "service", "fashion-json", 32)
    if ours:
        ratio(
            ">= the minimal Flask + onnxruntime app (native JSON, one image)",
            ("service", "fashion-json"),
            ("minimal", "fashion-json"),
            1.0,
        )
        check(
            "native JSON, one image: p99 <= 2x p50",
            f"{ours['p99_ms']:.2f} / {ours['p50_ms']:.2f} ms",
            ours["p99_ms"] <= 2 * ours["p50_ms"],
        )
        ratio(
            ">= 2x BentoML (native JSON, one image)",
            ("service", "fashion-json"),
            ("bentoml", "fashion-json"),
            2.0,
        )
    ratio(
        "V2 binary, one image: >= 1.15x the service's native JSON",
        ("service", "fashion-v2-binary"),
        ("service", "fashion-json"),
        1.15,
    )
    for peer in ("mlserver", "kserve"):
        ratio(
            f">= 2x {peer} (V2 JSON)",
            ("service", "fashion-v2-json"),
            (peer, "fashion-v2-json"),
            2.0,
        )
        a = _point(document, "service", "fashion-v2-json", 32)
        b = _point(document, peer, "fashion-v2-json", 32)
        if a and b:
            check(
                f"p99 below {peer}'s (V2 JSON)",
                f"{a['p99_ms']:.2f} ms vs {b['p99_ms']:.2f} ms",
                a["p99_ms"] < b["p99_ms"],
            )
    limit = document["limit"].get(f"fashion-mnist/batch{BATCH}", {}).get("instances_per_s")
    for workload, share in (("fashion-json-64", 0.6), ("fashion-v2-binary-64", 0.8)):
        point = _point(document, "service", workload, 32)
        if point and limit:
            images = _rps(point) * BATCH
            check(
                f"{workload}: >= {share:.0%} of the in-process batch-{BATCH} limit",
                f"{images:,.0f} images/s = {images / limit:.0%} of {limit:,.0f}",
                images >= share * limit,
            )
    ratio(
        f">= 100x the naive Keras server ({BATCH} images a request)",
        ("service", "fashion-json-64"),
        ("keras", "fashion-json-64"),
        100.0,
    )
    behind, ahead = [], []
    batching = document["systems"].get("service-batching", {}).get("workloads", {})
    for workload, points in batching.items():
        for point in points:
            off = _point(document, "service", workload, point["concurrency"])
            if off and _rps(off):
                share = _rps(point) / _rps(off)
                behind.append((share, workload, point["concurrency"]))
                if point["concurrency"] >= 32:
                    ahead.append((share, workload, point["concurrency"]))
    if behind:
        worst = min(behind)
        check(
            "dynamic batching on never more than 5% below off",
            f"worst {worst[0]:.2f}x ({worst[1]}, c={worst[2]})",
            worst[0] >= 0.95,
        )
    if ahead:
        best = max(ahead)
        check(
            "dynamic batching on >= 1.10x off somewhere at c >= 32",
            f"best {best[0]:.2f}x ({best[1]}, c={best[2]})",
            best[0] >= 1.10,
        )
    service = document["systems"].get("service")
    if service:
        rss = max(service.get("worker_rss_mb_after", service.get("worker_rss_mb", [0])) or [0])
        check("RSS per worker < 250 MB", f"{rss:.1f} MB", rss < 250)
        check(
            "start to ready < 3 s",
            f"{service['start_to_ready_s']:.2f} s",
            service["start_to_ready_s"] < 3,
        )
    return checks


def _ratios(document: dict) -> list[tuple[str, dict[int, float]]]:
    """Throughput ratios worth reading side by side, where both points were measured."""
    pairs = [
        (
            "service / baseline, fashion-json",
            ("service", "fashion-json"),
            ("baseline", "fashion-json"),
        ),
        (
            "service / minimal, fashion-json",
            ("service", "fashion-json"),
            ("minimal", "fashion-json"),
        ),
        (
            "service V2 binary / service native JSON",
            ("service", "fashion-v2-binary"),
            ("service", "fashion-json"),
        ),
        (
            "service V2 JSON / service native JSON",
            ("service", "fashion-v2-json"),
            ("service", "fashion-json"),
        ),
    ]
    found = []
    for label, (system, workload), (other, other_workload) in pairs:
        values = {}
        for c in document["settings"]["concurrency"]:
            ours = _point(document, system, workload, c)
            theirs = _point(document, other, other_workload, c)
            if ours and theirs and theirs["rps"]:
                key = "median_round_rps" if "median_round_rps" in theirs else "rps"
                values[c] = ours.get(key, ours["rps"]) / theirs[key]
        if values and len(values) == len(document["settings"]["concurrency"]):
            found.append((label, values))
    return found


def markdown(document: dict) -> str:
    """The results as Markdown tables."""
    lines = [
        f"# Benchmark results ({document['created_at']})",
        "",
        f"Command: `{document['command']}` — machine: {document['machine']['cores']} cores, "
        f"{document['machine']['platform']}, Python {document['machine']['python']}. Load from "
        f"wrk; each point is {document['settings']['rounds_per_point']} interleaved rounds "
        f"totalling at least {document['settings']['seconds_per_point']} s per system, after a "
        f"{document['settings']['warmup_seconds']} s warm-up; req/s is total requests over total "
        f"time, latencies the median of the rounds' percentiles; every server runs "
        f"{document['settings']['workers']} workers, the other gunicorn ones (minimal, keras, "
        f"service-batching) {document['settings']['threads']} threads each, `service` its "
        "default; "
        "wrk shares the 2 cores; `steal %` is CPU time the hypervisor gave elsewhere meanwhile.",
        "",
    ]
    if document["limit"]:
        lines += [
            "## The limit: onnxruntime in-process, no HTTP",
            "",
            "| model / batch | instances/s | calls/s | p50 ms | p99 ms |",
            "|---|---|---|---|---|",
        ]
        for key, r in document["limit"].items():
            lines.append(
                f"| {key} | {r['instances_per_s']:,.0f} | {r['calls_per_s']:,.0f} | "
                f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} |"
            )
        lines.append("")
    for workload in document["settings"]["workloads"]:
        rounds = any(
            "round_rps" in p
            for e in document["systems"].values()
            for p in e["workloads"].get(workload, [])
        )
        images = WORKLOADS[workload].images
        lines += [
            f"## {workload}: {WORKLOADS[workload].description}",
            "",
            "| system | concurrency | req/s | p50 ms | p90 ms | p99 ms | errors | steal % |"
            + (" images/s |" if images > 1 else "")
            + (" rounds' req/s (median) |" if rounds else ""),
            "|---|---|---|---|---|---|---|---|"
            + ("---|" if images > 1 else "")
            + ("---|" if rounds else ""),
        ]
        for name, entry in document["systems"].items():
            for p in entry["workloads"].get(workload, []):
                extra = ""
                if rounds:
                    extra = (
                        " "
                        + ", ".join(f"{r:,.0f}" for r in p["round_rps"])
                        + f" ({p['median_round_rps']:,.0f}) |"
                    )
                per_image = f" {p['rps'] * images:,.0f} |" if images > 1 else ""
                lines.append(
                    f"| {name} | {p['concurrency']} | {p['rps']:,.1f} | "
                    f"{p['p50_ms']:.2f} | {p['p90_ms']:.2f} | {p['p99_ms']:.2f} | "
                    f"{p['errors']} | {p.get('steal_pct', 0):.1f} |{per_image}"
                    f"{extra}"
                )
        lines.append("")
    ratios = _ratios(document)
    if ratios:
        lines += [
            "## Ratios (same run, same rounds; medians of the rounds' throughput)",
            "",
            "| comparison | " + " | ".join(f"c={c}" for c in ratios[0][1]) + " |",
            "|---|" + "---|" * len(ratios[0][1]),
        ]
        lines += [
            f"| {label} | " + " | ".join(f"{v:.2f}x" for v in values.values()) + " |"
            for label, values in ratios
        ]
        lines.append("")
    lines += ["## Systems", ""]
    for name, entry in document["systems"].items():
        extra = f", start to ready {entry['start_to_ready_s']:.2f} s"
        if "worker_rss_mb_after" in entry:
            extra += f", worker RSS {entry['worker_rss_mb_after']} MB (all models loaded)"
        lines.append(f"- **{name}**: {entry['description']}{extra}")
    if document["targets"]:
        lines += [
            "",
            "## Targets (concurrency 32 unless said)",
            "",
            "| target | measured | met |",
            "|---|---|---|",
        ]
        lines += [
            f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
            for t in document["targets"]
        ]
    return "\n".join(lines) + "\n"


def plot(document: dict, path: Path) -> None:
    """Throughput and p50/p99 latency against concurrency, one column per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = document["settings"]["workloads"]
    fig, axes = plt.subplots(2, len(workloads), figsize=(6 * len(workloads), 8), squeeze=False)
    for col, workload in enumerate(workloads):
        for name, entry in document["systems"].items():
            points = entry["workloads"].get(workload, [])
            if not points:
                continue
            c = [p["concurrency"] for p in points]
            line = axes[0][col].plot(c, [p["rps"] for p in points], marker="o", label=name)[0]
            axes[1][col].plot(
                c,
                [p["p50_ms"] for p in points],
                marker="o",
                color=line.get_color(),
                label=f"{name} p50",
            )
            axes[1][col].plot(
                c,
                [p["p99_ms"] for p in points],
                marker="x",
                linestyle="--",
                color=line.get_color(),
                label=f"{name} p99",
            )
        axes[0][col].set_title(f"{workload}: throughput")
        axes[0][col].set_ylabel("requests/s")
        axes[1][col].set_title(f"{workload}: latency (solid p50, dashed p99)")
        axes[1][col].set_ylabel("ms")
        for row in (0, 1):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_yscale("log")
            axes[row][col].set_xlabel("concurrency")
            axes[row][col].grid(alpha=0.3, which="both")
        axes[0][col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 s points, 1 s warm-up, service vs minimal, fashion-json, c=1,8",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per workload")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds per point (their seconds add up to --seconds)",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument(
        "--systems",
        nargs="+",
        help="subset of: service service-batching minimal keras bentoml mlserver kserve",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run this service as of a git commit (a worktree under "
        "bench/.worktrees), in the same interleaved rounds",
    )
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--skip-limit", action="store_true", help="no in-process measurement")
    parser.add_argument(
        "--threads",
        type=int,
        default=THREADS,
        help="threads per gunicorn worker: minimal, keras and "
        "service-batching (the service runs its default)",
    )
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.rounds = 2.0, 1.0, 1
        args.concurrency = [1, 8]
        args.systems = args.systems or ["service", "minimal"]
        args.workloads = ["fashion-json"]
    args.argv = argv
    if not shutil.which("wrk"):
        parser.error("wrk is missing: apt-get install wrk (scripts/test.sh installs it)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    run(args)
    log.info("wrote %s", args.output / "results.md")
    return 0
