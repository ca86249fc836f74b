"""Real photos on an ImageNet-size model: the image workload of its own.

    python -m bench.photos --baseline a02700e      # about 12 minutes, bench/results/photos/

A MobileNetV2 (224x224x3, ``keras.applications``, ``weights=None``: no download) with a
``Rescaling(1/127.5, offset=-1)`` inside and a 5-class head, imported as a user would
(``python -m training import``: bilinear, as Keras' loaders resize), and re-published with
``--antialias`` (``python -m training resize``); exported once and cached in
bench/.cache/photos. Two photo-like JPEGs (bench/photo.py: camera-like texture): 224x224,
and 12 MP (3000x4000 upright, stored 4000x3000 with EXIF orientation 6, ~4 MB).

Systems, in the same interleaved rounds: this service (the model's declared resize), this
service as of ``--baseline`` (its own resize: the contract had none then), a minimal Flask
app with the naive handler BentoML's and TorchServe's examples write (Pillow's full decode,
resize, model), and BentoML with that handler. In process, one thread: the model alone,
Pillow's decode + model (224x224), Pillow full decode + resize + model, Pillow draft +
resize + model (12 MP). The service's own histograms give the photo request's time split.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
import urllib.request
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench import harness
from bench.harness import ROOT, System, aggregate, running, wrk

CACHE = ROOT / "bench" / ".cache" / "photos"
CLASSES = "daisy,dandelion,roses,sunflowers,tulips"
DRAIN_S = 1.0  # between runs: what the last run left in flight finishes first
log = logging.getLogger("bench")

WORKLOADS = {
    "photo-224": "a 224x224 JPEG (the model's own size), bilinear as declared",
    "photo-12mp": "a 12 MP phone JPEG (4.0 MB, EXIF orientation 6), the exact Keras resize "
    "(bilinear, no antialias: the import's default)",
    "photo-12mp-aa": "the same photo to the version declared --antialias (bilinear): a JPEG "
    "draft where the kernel averages 5 drafted pixels a side (1/2 here: the naive systems "
    "have one handler)",
}


def model_repository() -> tuple[Path, Path, Path]:
    """(repository for this service, repository for the baseline, the ONNX file): made once."""
    repo, old_repo = CACHE / "repo", CACHE / "repo-baseline"
    onnx = repo / "photo" / "1" / "model.onnx"
    if (repo / "photo" / "3" / "metadata.json").exists() and old_repo.exists():
        return repo, old_repo, onnx
    shutil.rmtree(CACHE, ignore_errors=True)
    CACHE.mkdir(parents=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from training.cli import main as training

    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    base = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), include_top=False, weights=None, pooling="avg"
    )
    outputs = keras.layers.Dense(5, activation="softmax")(base(x))
    keras.Model(inputs, outputs).save(CACHE / "photo.keras")
    common = ["--repository", str(repo)]
    if training(["import", str(CACHE / "photo.keras"), "--classes", CLASSES, *common]) != 0:
        raise RuntimeError("the import failed")
    if training(["resize", "photo", "--interpolation", "bilinear", "--antialias", *common]):
        raise RuntimeError("the re-publication failed")
    # v3: v1 again, so that the 12 MP photos' time split is their own (v1 takes the 224s).
    if training(["resize", "photo", "--version", "1", "--interpolation", "bilinear", *common]):
        raise RuntimeError("the re-publication failed")
    # The baseline's contract had no declared resize: the same model, its own resize.
    shutil.copytree(repo / "photo" / "1", old_repo / "photo" / "1")
    meta_path = old_repo / "photo" / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    for key in ("interpolation", "antialias"):
        meta["preprocessing"].pop(key, None)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return repo, old_repo, onnx


def photos() -> dict[str, bytes]:
    """The two JPEGs (made once, cached)."""
    from bench.photo import jpeg, texture

    found = {}
    for name, (h, w, orientation) in {"224": (224, 224, 1), "12mp": (4000, 3000, 6)}.items():
        path = CACHE / f"{name}.jpg"
        if not path.exists():
            path.write_bytes(jpeg(texture(h, w, seed=11), orientation, quality=92))
        found[name] = path.read_bytes()
    return found


def systems(port: int, bodies, repo: Path, old_repo: Path, onnx: Path, baseline: Path | None):
    """The HTTP systems, each on ``port`` (the harness's worker counts)."""
    venv_bin = Path(sys.executable).parent
    service_env = {
        "SERVING_BIND": f"127.0.0.1:{port}",
        "SERVING_WORKERS": str(harness.WORKERS),
        "SERVING_DEFAULT_MODEL": "photo",
    }
    jpeg = "image/jpeg"

    def service_routes(aa_version: int | None):
        routes = {
            "photo-224": ("/predict?model=photo&version=1", jpeg, bodies["224"], {}),
            "photo-12mp": (
                f"/predict?model=photo&version={3 if aa_version else 1}",
                jpeg,
                bodies["12mp"],
                {},
            ),
        }
        if aa_version:
            routes["photo-12mp-aa"] = (
                f"/predict?model=photo&version={aa_version}",
                jpeg,
                bodies["12mp"],
                {},
            )
        routes["probe"] = routes["photo-224"]
        return routes

    naive = {
        "photo-224": ("/photo", jpeg, bodies["224"], {}),
        "photo-12mp": ("/photo", jpeg, bodies["12mp"], {}),
    }
    naive["probe"] = naive["photo-224"]
    multipart = {}
    for key, data in (("224", bodies["224"]), ("12mp", bodies["12mp"])):
        boundary = "photo-boundary-7d3c"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{key}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        body += data + f"\r\n--{boundary}--\r\n".encode()
        ctype = f"multipart/form-data; boundary={boundary}"
        multipart[f"photo-{key}"] = ("/photo", ctype, body, {})
    multipart["probe"] = multipart["photo-224"]
    photo_env = {"BENCH_PHOTO_MODEL": str(onnx)}
    found = {
        "service": System(
            "service",
            "this service as the README starts it, the model's declared resize",
            [str(venv_bin / "gunicorn"), "-c", "gunicorn.conf.py"],
            {**service_env, "SERVING_MODEL_REPOSITORY": str(repo)},
            "/health/ready",
            service_routes(2),
        ),
        "minimal": System(
            "minimal",
            "minimal Flask + gunicorn + onnxruntime, the naive handler (Pillow full decode, "
            "EXIF, resize, model)",
            [
                str(venv_bin / "gunicorn"),
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                str(harness.WORKERS),
                "-k",
                "gthread",
                "--threads",
                str(harness.THREADS),
                "--log-level",
                "warning",
                "bench.systems.photo_app:app",
            ],
            photo_env,
            None,
            naive,
        ),
        "bentoml": System(
            "bentoml",
            "BentoML 1.4 with onnxruntime and the naive handler",
            [
                str(harness.BENTO_VENV / "bin" / "bentoml"),
                "serve",
                "bench.systems.bentoml_photo:Photos",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            {**photo_env, "BENTOML_DO_NOT_TRACK": "true"},
            "/readyz",
            multipart,
        ),
    }
    if baseline is not None:
        found["baseline"] = System(
            "baseline",
            f"this service as of commit {baseline.name} (its own resize)",
            [str(venv_bin / "gunicorn"), "-c", "gunicorn.conf.py"],
            {**service_env, "SERVING_MODEL_REPOSITORY": str(old_repo)},
            "/health/ready",
            service_routes(None),
            cwd=baseline,
        )
    return found


def in_process(bodies: dict[str, bytes], onnx: Path, seconds: float) -> dict[str, float]:
    """Milliseconds per image on one thread: the model alone and the naive ways."""
    import io

    import onnxruntime as ort
    from PIL import Image, ImageOps

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def model(x):
        return session.run(None, {name: x})[0]

    def full_resize(data):
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        return np.asarray(image.resize((224, 224), Image.BILINEAR), np.float32)[None]

    def draft_resize(data):
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (224, 224))
        image = ImageOps.exif_transpose(image).convert("RGB")
        return np.asarray(image.resize((224, 224), Image.BILINEAR), np.float32)[None]

    def decode_only(data):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)[None]

    x = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    cases = {
        "model alone (batch 1)": lambda: model(x),
        "224x224 JPEG: Pillow decode + model": lambda: model(decode_only(bodies["224"])),
        "12 MP JPEG: Pillow full decode + float32 array": lambda: decode_only(bodies["12mp"]),
        "12 MP JPEG: Pillow full decode + resize + model": lambda: model(
            full_resize(bodies["12mp"])
        ),
        "12 MP JPEG: Pillow draft + resize + model": lambda: model(draft_resize(bodies["12mp"])),
    }
    found = {}
    for label, case in cases.items():
        case()
        times = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 5:
            started = time.perf_counter()
            case()
            times.append(time.perf_counter() - started)
        found[label] = round(1000 * statistics.median(times), 2)
        log.info("in process: %s %.1f ms", label, found[label])
    return found


def time_split(port: int) -> dict[str, dict[str, float]]:
    """Per model version, milliseconds per request from the service's own histograms:
    decode, resize, model, and the rest of the request's time in the dispatcher."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    sums: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith(("_sum", "_count")):
                continue
            version = sample.labels.get("version") or sample.labels.get("endpoint", "")
            sums[(sample.name, version)] = sums.get((sample.name, version), 0.0) + sample.value
    split = {}
    for version, what in (("1", "224x224"), ("3", "12 MP, exact"), ("2", "12 MP, antialias")):
        n = sums.get(("model_request_duration_seconds_count", version), 0.0)
        if not n:
            continue
        ms = {
            part: 1000 * sums.get((f"{metric}_sum", version), 0.0) / n
            for part, metric in (
                ("decode", "image_decode_duration_seconds"),
                ("resize", "image_resize_duration_seconds"),
                ("model", "inference_duration_seconds"),
                ("preprocessing", "preprocessing_duration_seconds"),
                ("request", "model_request_duration_seconds"),
            )
        }
        ms["rest"] = ms["request"] - ms["decode"] - ms["resize"] - ms["model"]
        split[f"photo v{version} ({what})"] = {k: round(v, 2) for k, v in ms.items()}
    return split


def _rps(document, system, workload, concurrency) -> float | None:
    """A point's typical round (the median): a round in which the kernel handed most of the
    connections to one worker runs at one core's speed, whatever the system."""
    points = document["systems"].get(system, {}).get("workloads", {}).get(workload, [])
    point = next((p for p in points if p["concurrency"] == concurrency), None)
    return point["median_round_rps"] if point else None


def targets(document: dict) -> list[dict]:
    """The issue's ratios, each within one run."""
    checks = []
    reference = document["in_process_ms"].get("224x224 JPEG: Pillow decode + model")
    for c in document["settings"]["concurrency"]:
        pairs = [
            ("photo-12mp", "baseline", "photo-12mp", 1.8, "exact Keras resize vs baseline"),
            ("photo-12mp", "minimal", "photo-12mp", 1.0, "exact Keras resize vs naive handler"),
            ("photo-12mp-aa", "baseline", "photo-12mp", 3.5, "antialias (draft) vs baseline"),
            ("photo-12mp-aa", "bentoml", "photo-12mp", 2.0, "antialias (draft) vs BentoML"),
        ]
        for ours, other, theirs, target, label in pairs:
            mine, peer = _rps(document, "service", ours, c), _rps(document, other, theirs, c)
            if mine and peer:
                ratio = mine / peer
                checks.append(
                    {
                        "target": f"{label} >= {target}x (c={c})",
                        "measured": f"{ratio:.2f}x ({mine:.1f} vs {peer:.1f} req/s)",
                        "met": ratio >= target,
                    }
                )
        mine = _rps(document, "service", "photo-224", c)
        if mine and reference:
            limit = harness.WORKERS * 1000 / reference
            checks.append(
                {
                    "target": f"224x224 JPEG >= 90% of in-process decode + model (c={c})",
                    "measured": f"{mine / limit:.0%} ({mine:.1f} of {limit:.1f} req/s)",
                    "met": mine >= 0.9 * limit,
                }
            )
        for workload in WORKLOADS:
            points = document["systems"].get("service", {}).get("workloads", {}).get(workload)
            point = next((p for p in points or [] if p["concurrency"] == c), None)
            if point:
                checks.append(
                    {
                        "target": f"{workload} p99 <= 3x p50 (c={c})",
                        "measured": f"{point['p99_ms']:.0f} / {point['p50_ms']:.0f} ms",
                        "met": point["p99_ms"] <= 3 * point["p50_ms"],
                    }
                )
    return checks


def markdown(document: dict) -> str:
    """results.md: the setup, every point, the in-process references, the split, targets."""
    lines = [
        f"# Photos on MobileNetV2 224x224 ({document['created_at']})",
        "",
        f"Command: `{document['command']}`; {document['machine']['cores']} cores; "
        f"{document['settings']['rounds']} rounds of {document['settings']['seconds']} s a "
        "point, interleaved.",
        "",
    ]
    for workload, text in WORKLOADS.items():
        lines.append(f"- `{workload}`: {text}")
    lines += [
        "",
        "| system | workload | c | req/s (all rounds) | median round | rounds | p50 ms | "
        "p99 ms | errors |",
        "|---" * 9 + "|",
    ]
    for name, entry in document["systems"].items():
        for workload, points in entry["workloads"].items():
            for p in points:
                rounds = ", ".join(f"{r:.1f}" for r in p["round_rps"])
                lines.append(
                    f"| {name} | {workload} | {p['concurrency']} | {p['rps']:.1f} | "
                    f"{p['median_round_rps']:.1f} | {rounds} | {p['p50_ms']:.1f} | "
                    f"{p['p99_ms']:.1f} | {p['errors']} |"
                )
    lines += ["", "Systems:", ""]
    lines += [f"- {name}: {entry['description']}" for name, entry in document["systems"].items()]
    lines += ["", "In process, one thread (median ms):", "", "| case | ms |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in document["in_process_ms"].items()]
    lines += [
        "",
        "The service's own histograms (ms per request, all requests of the run):",
        "",
        "| version | decode | resize | model | rest | request |",
        "|---|---|---|---|---|---|",
    ]
    for version, ms in document["time_split_ms"].items():
        lines.append(
            f"| {version} | {ms['decode']} | {ms['resize']} | {ms['model']} | {ms['rest']} | "
            f"{ms['request']} |"
        )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [
        f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |"
        for t in document["targets"]
    ]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict:
    """Every system on every photo workload, in interleaved rounds."""
    out_dir: Path = args.output
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    body_dir = out_dir / "bodies"
    body_dir.mkdir(exist_ok=True)
    repo, old_repo, onnx = model_repository()
    bodies = photos()
    baseline = harness.baseline_checkout(args.baseline) if args.baseline else None
    chosen = list(args.systems) + (["baseline"] if baseline is not None else [])
    if "bentoml" in chosen:
        harness.ensure_bentoml_venv()
    document = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "bench.photos", *args.argv]),
        "machine": {"cores": os.cpu_count()},
        "settings": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "concurrency": args.concurrency,
            "baseline": args.baseline,
            "photo_bytes": {k: len(v) for k, v in bodies.items()},
        },
        "systems": {},
    }
    document["in_process_ms"] = in_process(bodies, onnx, args.seconds / 2)
    per_round = max(1, round(args.seconds / args.rounds))
    with ExitStack() as stack:
        live = {}
        for offset, name in enumerate(chosen):
            port = args.port + offset
            system = systems(port, bodies, repo, old_repo, onnx, baseline)[name]
            log.info("starting %s on port %d", name, port)
            stack.enter_context(running(system, port, out_dir / "logs"))
            live[name] = (system, port)
            document["systems"][name] = {"description": system.description, "workloads": {}}
        for workload in WORKLOADS:
            targets_ = {}
            for name, (system, port) in live.items():
                if workload not in system.routes:
                    continue
                path, ctype, body, headers = system.routes[workload]
                body_file = body_dir / f"{name}-{workload}.body"
                body_file.write_bytes(body)
                targets_[name] = (f"http://127.0.0.1:{port}{path}", ctype, body_file, headers)
                wrk(*targets_[name], 4, args.warmup)
            for concurrency in args.concurrency:
                rounds = {name: [] for name in targets_}
                for r in range(args.rounds):
                    for name in list(targets_) if r % 2 == 0 else list(reversed(targets_)):
                        # A 12 MP request goes on for ~0.1 s after wrk stops: a worker still
                        # busy with one when the next run's connections arrive misses them
                        # all, and keeps missing them for that run (keep-alive).
                        time.sleep(DRAIN_S)
                        rounds[name].append(wrk(*targets_[name], concurrency, per_round))
                for name, measured in rounds.items():
                    point = aggregate(measured)
                    document["systems"][name]["workloads"].setdefault(workload, []).append(point)
                    log.info(
                        "%s %s c=%d: %.1f req/s p50 %.1f ms p99 %.1f ms errors %d",
                        name,
                        workload,
                        concurrency,
                        point["rps"],
                        point["p50_ms"],
                        point["p99_ms"],
                        point["errors"],
                    )
        document["time_split_ms"] = time_split(live["service"][1]) if "service" in live else {}
    document["targets"] = targets(document)
    (out_dir / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown(document))
    return document


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.photos", description=__doc__)
    parser.add_argument("--baseline", help="this service at another commit, same rounds")
    parser.add_argument(
        "--systems", nargs="+", default=["service", "minimal", "bentoml"], help="systems to run"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=float, default=20.0, help="per point, all rounds")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--port", type=int, default=18600)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "photos")
    args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    document = run(args)
    for check in document["targets"]:
        log.info("%s: %s (%s)", check["target"], check["measured"], "met" if check["met"] else "no")
    return 0


if __name__ == "__main__":
    sys.exit(main())
