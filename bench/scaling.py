"""How the service's start-up and memory grow with the number of model versions it serves.

    python -m bench.scaling                       # 1, 10 and 100 versions, bench/results/scaling/
    python -m bench.scaling --counts 1 10 --output /tmp/scaling

Each repository holds copies of the committed model versions under other names (cycling
through all of them, so the mix of sizes is the committed one). The service starts as the
README starts it (2 workers); "ready" is when /health/ready answers 200 *and* every worker
has logged the load of every version, so it is the time until the last worker can serve
them all. RSS is each worker's resident memory once ready.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import WORKERS, stop, worker_rss_mb

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
log = logging.getLogger("bench.scaling")


def committed_versions() -> list[Path]:
    """Every committed model version folder, in a fixed order."""
    return sorted(p for p in MODELS.glob("*/[0-9]*") if (p / "model.onnx").is_file())


def make_repository(folder: Path, count: int) -> int:
    """``count`` model versions (one version each, named m000, m001, ...) copied from the
    committed ones in turn; the ONNX bytes they hold."""
    sources, total = committed_versions(), 0
    for i in range(count):
        source = sources[i % len(sources)]
        target = folder / f"m{i:03d}" / "1"
        shutil.copytree(source, target)
        meta = json.loads((target / "metadata.json").read_text())
        meta.update(name=f"m{i:03d}", version=1)
        (target / "metadata.json").write_text(json.dumps(meta))
        total += (target / "model.onnx").stat().st_size
    return total


def _loads_per_worker(log_file: Path) -> Counter:
    counts: Counter = Counter()
    for line in log_file.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"loaded model ' in line:
            counts[json.loads(line)["pid"]] += 1
    return counts


def measure(count: int, port: int, work: Path, settings: dict[str, str]) -> dict:
    """Start the service on a repository of ``count`` versions; time to ready, RSS."""
    repo = work / f"repo-{count}"
    onnx_bytes = make_repository(repo, count)
    log_file = work / f"service-{count}.log"
    env = {
        **os.environ,
        "SERVING_BIND": f"127.0.0.1:{port}",
        "SERVING_WORKERS": str(WORKERS),
        "SERVING_MODEL_REPOSITORY": str(repo),
        "SERVING_DEFAULT_MODEL": "m000",
        "SERVING_METRICS_DIR": str(work / f"metrics-{count}"),
        **settings,
    }
    venv_bin = Path(sys.executable).parent
    with log_file.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            [str(venv_bin / "gunicorn"), "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        first_ready = None
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited; see {log_file}")
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"not ready in 600 s; see {log_file}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/health/ready", timeout=5
                ) as response:
                    if response.status == 200 and first_ready is None:
                        first_ready = time.perf_counter() - started
            except OSError:
                pass
            loads = _loads_per_worker(log_file)
            if first_ready is not None and len(loads) >= WORKERS and min(loads.values()) >= count:
                ready = time.perf_counter() - started
                break
            time.sleep(0.05)
        rss = worker_rss_mb(process.pid)
    finally:
        stop(process, 60)
    shutil.rmtree(repo, ignore_errors=True)
    return {
        "versions": count,
        "onnx_bytes": onnx_bytes,
        "first_ready_s": round(first_ready, 3),
        "all_workers_ready_s": round(ready, 3),
        "worker_rss_mb": rss,
    }


def targets(points: list[dict]) -> list[dict]:
    """The issue's targets for 100 versions against the 1-version figures."""
    by_count = {p["versions"]: p for p in points}
    if 1 not in by_count or 100 not in by_count:
        return []
    one, many = by_count[1], by_count[100]
    allowed = max(one["worker_rss_mb"]) + 2 * many["onnx_bytes"] / 2**20
    return [
        {
            "target": "100 versions: ready <= 10 s after start",
            "measured": f"{many['all_workers_ready_s']:.2f} s",
            "met": many["all_workers_ready_s"] <= 10,
        },
        {
            "target": "100 versions: RSS per worker <= 1-version RSS + 2x the ONNX bytes loaded",
            "measured": f"{max(many['worker_rss_mb']):.1f} MB (allowed {allowed:.1f} MB)",
            "met": max(many["worker_rss_mb"]) <= allowed,
        },
    ]


def markdown(document: dict) -> str:
    """The table and the targets."""
    lines = [
        f"# Start-up and memory against the number of model versions ({document['created_at']})",
        "",
        f"Command: `{document['command']}` — {document['machine']}; "
        f"{WORKERS} workers; settings: {document['settings'] or 'defaults'}.",
        "",
        "| versions | ONNX MB loaded | first ready (s) | every worker ready (s) | "
        "RSS per worker (MB) |",
        "|---|---|---|---|---|",
    ]
    for p in document["points"]:
        lines.append(
            f"| {p['versions']} | {p['onnx_bytes'] / 2**20:.1f} | "
            f"{p['first_ready_s']:.2f} | {p['all_workers_ready_s']:.2f} | "
            f"{', '.join(f'{r:.1f}' for r in p['worker_rss_mb'])} |"
        )
    if document["targets"]:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [
            f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
            for t in document["targets"]
        ]
    return "\n".join(lines) + "\n"


def plot(document: dict, path: Path) -> None:
    """Ready time and RSS per worker against the number of versions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = document["points"]
    counts = [p["versions"] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(
        counts, [p["all_workers_ready_s"] for p in points], marker="o", label="every worker ready"
    )
    left.plot(
        counts,
        [p["first_ready_s"] for p in points],
        marker="x",
        linestyle="--",
        label="first /health/ready 200",
    )
    left.set_ylabel("seconds after start")
    right.plot(
        counts, [max(p["worker_rss_mb"]) for p in points], marker="o", label="largest worker RSS"
    )
    right.set_ylabel("MB")
    for axis, title in ((left, "start to ready"), (right, "RSS per worker")):
        axis.set_xscale("log")
        axis.set_xlabel("model versions in the repository")
        axis.set_title(title)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a SERVING_* setting for every run, e.g. SERVING_BATCHING=false",
    )
    parser.add_argument("--port", type=int, default=8890)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "scaling")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = dict(s.split("=", 1) for s in args.setting)
    points = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as work:
        for count in args.counts:
            point = measure(count, args.port, Path(work), settings)
            log.info(
                "%d versions: ready in %.2f s (first %.2f s), worker RSS %s MB",
                count,
                point["all_workers_ready_s"],
                point["first_ready_s"],
                point["worker_rss_mb"],
            )
            points.append(point)
    document = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "bench.scaling", *argv]),
        "machine": f"{os.cpu_count()} cores",
        "settings": settings,
        "points": points,
        "targets": targets(points),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.output / "results.md").write_text(markdown(document))
    plot(document, args.output / "scaling.png")
    log.info("wrote %s", args.output / "results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
