"""Shadow traffic: what running a model's shadow version on every answered request costs the
live requests.

    python -m bench.shadow      # the full run: ~10 minutes on 2 cores, bench/results/shadow/
    python -m bench.shadow --seconds 4 --rounds 1 --points fashion-mnist:8 --output /tmp/shadow

A scratch model repository holds three models with two versions each: ``fashion-mnist``
(v2 a copy of the committed v1: a shadow as costly as the served model), ``fashion-mirror``
(v1 and v2 the committed fashion-mnist versions: v2 is another, mirror-averaged network,
twice v1's work an image, with the same input, preprocessing and classes, so the two
disagree now and then) and ``circles`` (v1 twice: a feature-vector model whose session
costs next to nothing, so what remains is the shadow's own machinery). The service starts
as the README starts it (2 workers, its defaults, SERVING_POLL_INTERVAL_S=0.5). For each point
(model, concurrency) wrk sends the harness's request body (a Fashion-MNIST test image as a
JSON pixel array, a circles test vector) to ``/predict?model=<name>`` (no version: answered
by the version labelled ``stable``) in windows with the model's serving.json

    OFF {"new_versions": "hold", "labels": {"stable": 1}}
    ON  {"new_versions": "hold", "labels": {"stable": 1},
         "shadow": {"version": 2, "fraction": 1.0}}

in the order OFF ON, ON OFF, OFF ON, ... (the harness's alternating rounds: a linear drift
falls on both alike). After each switch the bench waits until every worker has logged the
new rules and GET /models/<name> shows them, then warms up. Around each window it drains the
shadow queues (no load: the SCHED_IDLE thread gets the CPU) and reads /metrics: instances
answered by v1, shadow comparisons and drops, the shadow's onnxruntime calls; and /proc:
the CPU time of the machine, of each worker and of each worker's shadow thread (its only
thread under SCHED_IDLE, or at nice 19). Before each window it waits for the machine to be
quiet; a window in which other processes took more than 5% of the machine is run again (up
to 3 tries, the least shared kept): the machine is 2 cores, and the load generator shares
them already.

In process, before the service starts: each version's onnxruntime session.run time on one
thread (the service's session options) for one request's batch (1 instance) and for 32.

The issue's targets, at concurrency 32: the live p50 and p99 with fraction 1.0 within 10% of
shadow off; throughput down by no more than the shadow model's own cost, i.e. ON/OFF >=
c / (c + t), where c is the machine's CPU time per request with the shadow off (wrk, HTTP,
everything) and t the shadow version's in-process session.run time for the request's batch:
what the throughput would be if every request also paid for its shadow run in full.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench import harness
from bench.harness import ROOT, WORKERS, aggregate, stop, wrk

MODELS = ROOT / "models"
SHADOW_VERSION, SERVED_VERSION = 2, 1
POLL_INTERVAL_S = 0.5
DRAIN_S = 1.0  # between runs: what the last run left in flight finishes first
COMPARED = ("input", "preprocessing", "classes")  # what the shadow needs identical
# model -> (v1's source folder, v2's, the harness body its requests send)
FASHION = MODELS / "fashion-mnist"
SOURCES = {
    "fashion-mnist": (FASHION / "1", FASHION / "1", "pixels"),
    "fashion-mirror": (FASHION / "1", FASHION / "2", "pixels"),
    "circles": (MODELS / "circles" / "1", MODELS / "circles" / "1", "vector"),
}
DEFAULT_POINTS = ["fashion-mnist:32", "fashion-mirror:32", "circles:32", "fashion-mnist:2"]
IGNORED_WARNINGS = ("API keys are off",)
SCHED_IDLE = 5  # the policy field of /proc/<pid>/task/<tid>/stat
QUIET_SHARE = 0.10  # before a window: the machine, idle but for the bench, at most this busy
OTHER_SHARE = 0.05  # a window where other processes took more of the machine is run again
TRIES = 3  # the bench runs without keys, on purpose
log = logging.getLogger("bench.shadow")


def serving_json(shadow: bool, fraction: float = 1.0) -> dict:
    """The model's rules for a window: v1 answers requests that name no version; v2 is held,
    and with ``shadow`` also runs on a ``fraction`` of v1's answered requests."""
    rules: dict = {"new_versions": "hold", "labels": {"stable": SERVED_VERSION}}
    if shadow:
        rules["shadow"] = {"version": SHADOW_VERSION, "fraction": fraction}
    return rules


def incomparable(served: dict, shadow: dict) -> list[str]:
    """The metadata fields that differ between two versions (the shadow compares only
    versions with the same input, preprocessing and classes)."""
    return [key for key in COMPARED if served.get(key) != shadow.get(key)]


def make_repository(folder: Path) -> dict[str, list[str]]:
    """Each model of SOURCES as versions 1 and 2 (rules OFF); the metadata fields that
    differ between the two versions (a copy differs in nothing)."""
    differences = {}
    for name, (v1, v2, _) in SOURCES.items():
        metas = []
        for version, source in ((SERVED_VERSION, v1), (SHADOW_VERSION, v2)):
            target = folder / name / str(version)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("report"))
            meta = json.loads((target / "metadata.json").read_text())
            if (meta["name"], meta["version"]) != (name, version):  # a copy under a new name
                meta.update(name=name, version=version)
                (target / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
            metas.append(meta)
        differences[name] = incomparable(*metas)
        write_rules(folder, name, serving_json(False))
    return differences


def write_rules(folder: Path, model: str, rules: dict) -> None:
    """serving.json, atomically (the poller never reads half a file)."""
    path = folder / model / "serving.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rules) + "\n")
    os.replace(tmp, path)


# --- the service and what it reports -------------------------------------------------------


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def scrape(port: int) -> dict[str, dict[str, float]]:
    """Per model, summed over the workers: instances answered by v1, comparisons (agree,
    disagree), drops, the shadow version's onnxruntime calls, instances and seconds, and
    the serving.json files the service could not use."""
    from prometheus_client.parser import text_string_to_metric_families

    text = _get(f"http://127.0.0.1:{port}/metrics").decode()
    wanted = {
        ("prediction_confidence_count", str(SERVED_VERSION)): "served",
        ("shadow_dropped_total", str(SERVED_VERSION)): "dropped",
        ("inference_duration_seconds_count", str(SHADOW_VERSION)): "shadow_calls",
        ("inference_duration_seconds_sum", str(SHADOW_VERSION)): "shadow_session_s",
        ("batch_size_sum", str(SHADOW_VERSION)): "shadow_instances",
    }
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model not in SOURCES:
                continue
            into = found.setdefault(model, {})
            key = wanted.get((sample.name, sample.labels.get("version")))
            if sample.name == "shadow_comparisons_total":
                key = sample.labels["outcome"]  # agree / disagree
            elif sample.name == "shadow_failures_total" and sample.labels.get("version") == str(
                SERVED_VERSION
            ):
                key = "failed"
            elif sample.name == "model_config_errors_total":
                key = "config_errors"
            if key:
                into[key] = into.get(key, 0.0) + sample.value
    return found


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """``after - before`` per counter (a counter not there yet counts 0)."""
    return {k: round(v - before.get(k, 0.0), 6) for k, v in after.items()}


def drain(port: int, model: str, timeout: float = 20.0) -> dict[str, float]:
    """/metrics for ``model`` once the shadow queues are empty (no load: the counts stop
    moving), or at ``timeout``."""
    deadline = time.monotonic() + timeout
    now = scrape(port).get(model, {})
    while time.monotonic() < deadline:
        time.sleep(0.3)
        again = scrape(port).get(model, {})
        if again == now:
            return again
        now = again
    return now


def workers(master: int) -> list[int]:
    """gunicorn's worker processes (children of the master)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(master):
            found.append(int(status.parent.name))
    return sorted(found)


def _stat(path: Path) -> list[str]:
    """/proc/.../stat's fields after the command name (index 0 is field 3, the state)."""
    return path.read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU seconds so far (the scheduler's nanosecond runtime, /proc/.../schedstat) of each
    worker's threads together and of each worker's shadow thread (its only thread under
    SCHED_IDLE, or at nice 19): keys ``worker:<pid>`` and ``shadow:<pid>``."""
    found: dict[str, float] = {}
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                runtime = int((task / "schedstat").read_text().split()[0]) / 1e9
                fields = _stat(task / "stat")
                nice, policy = int(fields[16]), int(fields[38])
            except (OSError, IndexError, ValueError):
                continue  # a thread that just ended
            found[f"worker:{pid}"] = found.get(f"worker:{pid}", 0.0) + runtime
            if policy == SCHED_IDLE or nice == 19:
                found[f"shadow:{pid}"] = runtime
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (busy: all
    but idle and iowait; steal counts as busy, it is recorded per run apart)."""
    tick = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])
    return (total - values[3] - values[4]) / tick, total / tick


def other_share(window: dict) -> float:
    """The share of the machine's time in a window that neither the workers nor wrk used."""
    return window["other_cpu_s"] / max(1e-9, window["machine_total_s"])


def wait_quiet(timeout: float) -> float:
    """Wait (up to ``timeout`` s) until the machine, with the service idle, is at most
    QUIET_SHARE busy over a second (nothing else heavy runs); the seconds waited."""
    started = time.monotonic()
    while True:
        busy, total = machine_busy()
        time.sleep(1.0)
        busy2, total2 = machine_busy()
        share = (busy2 - busy) / max(1e-9, total2 - total)
        waited = time.monotonic() - started
        if share <= QUIET_SHARE or waited > timeout:
            if waited > 1.5:
                log.info("waited %.0f s for a quiet machine (now %.0f%% busy)", waited, 100 * share)
            return round(waited - 1.0, 1)
        time.sleep(2.0)


def applied_rules(log_file: Path, offset: int, model: str, pids: list[int], shadow: bool) -> bool:
    """Whether every worker logged the model's new rules after ``offset`` of its log."""
    with log_file.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    want = "'shadow': {'version': 2" if shadow else "'shadow': None"
    seen = set()
    for line in text.splitlines():
        if f"model {model}: serving.json" in line and want in line:
            try:
                seen.add(json.loads(line)["pid"])
            except (ValueError, KeyError):
                continue
    return set(pids) <= seen


def model_shows(port: int, model: str, shadow: bool) -> bool:
    """Whether GET /models/<name> (one worker's view) shows the rules."""
    view = json.loads(_get(f"http://127.0.0.1:{port}/models/{model}"))
    roles = {v["version"]: v.get("role") for v in view["versions"]}
    block = (view.get("shadow") or {}).get("version")
    if shadow:
        return block == SHADOW_VERSION and roles.get(SHADOW_VERSION) == "shadow"
    return block is None and "shadow" not in roles.values()


def switch(
    repo: Path, port: int, log_file: Path, pids: list[int], model: str, shadow: bool
) -> float:
    """Write the model's rules and wait until every worker serves by them; the seconds that
    took."""
    started = time.monotonic()
    offset = log_file.stat().st_size
    write_rules(repo, model, serving_json(shadow))
    deadline = started + 30
    streak = 0
    while streak < 5:  # five views in a row, from whichever workers answer
        if time.monotonic() > deadline:
            raise RuntimeError(f"{model}: shadow={shadow} not applied in 30 s; see {log_file}")
        time.sleep(0.1)
        ok = applied_rules(log_file, offset, model, pids, shadow) and model_shows(
            port, model, shadow
        )
        streak = streak + 1 if ok else 0
    return round(time.monotonic() - started, 2)


def log_problems(log_file: Path) -> tuple[list[str], int]:
    """The service log's lines that are not access lines at INFO (warnings, errors,
    tracebacks), and how many of them are not the expected warnings."""
    kept, unexpected = [], 0
    for line in log_file.read_text(errors="replace").splitlines():
        if '"logger":"service.access"' in line and '"level":"INFO"' in line:
            continue
        try:
            level = json.loads(line).get("level", "")
        except ValueError:
            level = "RAW"  # a traceback or a print, not a JSON log line
        if level == "INFO":
            continue
        kept.append(line)
        if not any(w in line for w in IGNORED_WARNINGS):
            unexpected += 1
    return kept, unexpected


@contextmanager
def service(repo: Path, port: int, log_file: Path):
    """The service as the README starts it, on the scratch repository: yields its master pid."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SERVING_BIND": f"127.0.0.1:{port}",
        "SERVING_WORKERS": str(WORKERS),
        "SERVING_MODEL_REPOSITORY": str(repo),
        "SERVING_DEFAULT_MODEL": "fashion-mnist",
        "SERVING_POLL_INTERVAL_S": str(POLL_INTERVAL_S),
        "SERVING_METRICS_DIR": str(repo.parent / "metrics"),
    }
    venv_bin = Path(sys.executable).parent
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            [str(venv_bin / "gunicorn"), "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited; see {log_file}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service is not ready in 120 s; see {log_file}")
            try:
                _get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                if len(workers(process.pid)) >= WORKERS:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        yield process.pid
    finally:
        stop(process, 30)


# --- in process ----------------------------------------------------------------------------


def in_process(repo: Path, bodies: dict[str, bytes], seconds: float) -> dict[str, dict]:
    """Each version's session.run on one thread (the service's options): ms for one
    request's batch (the bench's body, 1 instance) and per instance in a batch of 32."""
    import onnxruntime as ort

    from service.contract.preprocessing import features_to_tensor, pixels_to_tensor, spec_from_dict

    found: dict[str, dict] = {}
    for name, (_, _, body) in SOURCES.items():
        for version in (SERVED_VERSION, SHADOW_VERSION):
            folder = repo / name / str(version)
            meta = json.loads((folder / "metadata.json").read_text())
            spec = spec_from_dict(meta["preprocessing"])
            to_tensor = pixels_to_tensor if spec.kind == "image" else features_to_tensor
            one = to_tensor(json.loads(bodies[body])["instances"], spec)
            many = np.repeat(one, 32, axis=0)
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(
                str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
            )
            entry = {}
            for label, x in (("batch1", one), ("batch32", many)):
                feed = {meta["input"]["name"]: x}
                for _ in range(20):
                    session.run(None, feed)
                timings, deadline = [], time.perf_counter() + seconds
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    session.run(None, feed)
                    timings.append(time.perf_counter() - t0)
                median_ms = float(np.median(timings)) * 1000
                entry[f"{label}_ms"] = round(median_ms, 4)
                entry[f"{label}_ms_per_instance"] = round(median_ms / len(x), 4)
            found[f"{name}/{version}"] = entry
    return found


# --- one point -----------------------------------------------------------------------------


def window(port: int, master: int, model: str, target: tuple, concurrency: int, seconds: float):
    """One measured wrk run, with the metrics and CPU deltas around it (queues drained)."""
    pids = workers(master)
    time.sleep(DRAIN_S)
    before, cpu_before = drain(port, model), cpu_seconds(pids)
    busy_before, total_before = machine_busy()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = wrk(*target, concurrency, seconds)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, now that it has exited
    busy_after, total_after = machine_busy()
    cpu_after = cpu_seconds(pids)
    after = drain(port, model)
    counts = delta(after, before)
    result["served"] = int(counts.get("served", 0))
    result["comparisons"] = int(counts.get("agree", 0) + counts.get("disagree", 0))
    result["disagreements"] = int(counts.get("disagree", 0))
    result["dropped"] = int(counts.get("dropped", 0))
    result["failed"] = int(counts.get("failed", 0))  # shadow runs that raised
    result["shadow_calls"] = int(counts.get("shadow_calls", 0))
    result["shadow_instances"] = int(counts.get("shadow_instances", 0))
    result["shadow_session_s"] = round(counts.get("shadow_session_s", 0.0), 4)
    result["config_errors"] = int(counts.get("config_errors", 0))
    result["machine_busy_s"] = round(busy_after - busy_before, 2)
    result["machine_total_s"] = round(total_after - total_before, 2)
    cpu = delta(cpu_after, cpu_before)
    result["worker_cpu_s"] = [round(v, 2) for k, v in sorted(cpu.items()) if k[0] == "w"]
    result["shadow_thread_cpu_s"] = round(sum(v for k, v in cpu.items() if k[0] == "s"), 3)
    result["wrk_cpu_s"] = round(
        waited.ru_utime + waited.ru_stime - children.ru_utime - children.ru_stime, 2
    )
    # The machine's busy time the service and wrk do not explain: other processes (a test
    # run, say); a window with much of it measured a shared machine.
    result["other_cpu_s"] = round(
        result["machine_busy_s"] - sum(result["worker_cpu_s"]) - result["wrk_cpu_s"], 2
    )
    return result


def summarize(windows: list[dict]) -> dict:
    """One side (OFF or ON) of a point: the harness's aggregate of its windows, the shadow's
    counts summed, the machine's CPU time per request."""
    point = aggregate(windows)
    point["failed"] = sum(w.get("failed", 0) for w in windows)
    for key in (
        "served",
        "comparisons",
        "disagreements",
        "dropped",
        "shadow_calls",
        "shadow_instances",
        "config_errors",
    ):
        point[key] = sum(w[key] for w in windows)
    point["shadow_thread_cpu_s"] = round(sum(w["shadow_thread_cpu_s"] for w in windows), 3)
    point["shadow_session_s"] = round(sum(w["shadow_session_s"] for w in windows), 4)
    point["other_cpu_s"] = round(max(w["other_cpu_s"] for w in windows), 2)
    busy = sum(w["machine_busy_s"] for w in windows)
    point["cpu_ms_per_request"] = round(1000 * busy / point["requests"], 4) if point else 0
    point["machine_busy_pct"] = round(
        100 * busy / max(1e-9, sum(w["machine_total_s"] for w in windows)), 1
    )
    point["windows"] = windows
    return point


def compare(off: dict, on: dict, shadow_ms: float) -> dict:
    """ON against OFF, and the floor the shadow's own cost sets on the throughput."""
    request_ms = off["cpu_ms_per_request"]
    offered = on["comparisons"] + on["dropped"]
    failed = on.get("failed", 0)
    thread_ms = (
        round(1000 * on["shadow_thread_cpu_s"] / on["comparisons"], 4)
        if on["comparisons"]
        else None
    )
    return {
        "rps_ratio": round(on["rps"] / off["rps"], 4) if off["rps"] else None,
        "median_round_rps_ratio": round(on["median_round_rps"] / off["median_round_rps"], 4)
        if off["median_round_rps"]
        else None,
        "p50_ratio": round(on["p50_ms"] / off["p50_ms"], 4) if off["p50_ms"] else None,
        "p99_ratio": round(on["p99_ms"] / off["p99_ms"], 4) if off["p99_ms"] else None,
        "shadow_ms": shadow_ms,
        "request_cpu_ms": request_ms,
        "shadow_share": round(shadow_ms / request_ms, 4) if request_ms else None,
        "rps_floor": round(request_ms / (request_ms + shadow_ms), 4) if request_ms else None,
        "shadow_thread_ms": thread_ms,
        "compared_pct": round(100 * on["comparisons"] / offered, 2) if offered else None,
        "accounted": offered + failed == on["served"],
    }


def run_point(repo, port, master, log_file, model, concurrency, args, body_file) -> dict:
    """OFF and ON in alternating rounds for one (model, concurrency)."""
    target = (
        f"http://127.0.0.1:{port}/predict?model={model}",
        "application/json",
        body_file,
        {},
    )
    sides: dict[str, list[dict]] = {"off": [], "on": []}
    switches, state, discarded = [], None, []
    for r in range(args.rounds):
        for side in ("off", "on") if r % 2 == 0 else ("on", "off"):
            if side != state:
                pids = workers(master)
                took = switch(repo, port, log_file, pids, model, side == "on")
                switches.append(took)
                state = side
                wrk(*target, concurrency, args.warmup)  # warm-up, not recorded
            tries = []
            for _ in range(TRIES):
                waited = wait_quiet(args.quiet_timeout)
                measured = window(port, master, model, target, concurrency, args.seconds)
                measured.update(round=r, waited_quiet_s=waited, side=side)
                tries.append(measured)
                if other_share(measured) <= OTHER_SHARE:
                    break
                log.info(
                    "%s c=%d %s: other processes took %.1f s of the machine's %.1f s: again",
                    model,
                    concurrency,
                    side.upper(),
                    measured["other_cpu_s"],
                    measured["machine_total_s"],
                )
            measured = min(tries, key=other_share)  # the least shared, if none was clean
            discarded += [t for t in tries if t is not measured]
            sides[side].append(measured)
            log.info(
                "%s c=%d shadow %s: %.0f req/s p50 %.2f ms p99 %.2f ms, compared %d dropped %d "
                "(served %d), shadow thread %.2f s CPU, workers %s s, errors %d",
                model,
                concurrency,
                side.upper(),
                measured["rps"],
                measured["p50_ms"],
                measured["p99_ms"],
                measured["comparisons"],
                measured["dropped"],
                measured["served"],
                measured["shadow_thread_cpu_s"],
                measured["worker_cpu_s"],
                measured["errors"],
            )
    summary = {
        "model": model,
        "concurrency": concurrency,
        "off": summarize(sides["off"]),
        "on": summarize(sides["on"]),
        "switch_s": switches,
        "discarded": discarded,  # windows run again: other processes used the machine
    }
    summary["shadow_view"] = json.loads(_get(f"http://127.0.0.1:{port}/models/{model}")).get(
        "shadow"
    )
    return summary


# --- the report ----------------------------------------------------------------------------


def targets(document: dict) -> list[dict]:
    """The issue's targets at concurrency 32, per model."""
    checks = []
    for point in document["points"]:
        if point["concurrency"] != 32:
            continue
        r, name = point["ratios"], f"{point['model']}, c=32"
        for key, what in (("p50", "p50"), ("p99", "p99")):
            off, on = point["off"][f"{key}_ms"], point["on"][f"{key}_ms"]
            checks.append(
                {
                    "target": f"{name}: live {what} with the shadow on within 10% of off",
                    "measured": f"{on:.2f} vs {off:.2f} ms ({r[f'{key}_ratio']:.3f}x)",
                    "met": r[f"{key}_ratio"] <= 1.10,
                }
            )
        checks.append(
            {
                "target": f"{name}: throughput down by no more than the shadow model's own "
                "cost (ON/OFF >= c / (c + t))",
                "measured": f"{r['rps_ratio']:.3f}x, floor {r['rps_floor']:.3f} "
                f"(t {r['shadow_ms']:.3f} ms, c {r['request_cpu_ms']:.3f} ms)",
                "met": r["rps_ratio"] >= r["rps_floor"],
            }
        )
    return checks


def markdown(document: dict) -> str:
    """Tables: every window, the ratios, the in-process costs, the targets."""
    m = document["machine"]
    s = document["settings"]
    lines = [
        f"# Shadow traffic: live latency and throughput, shadow off and on "
        f"({document['created_at']})",
        "",
        f"Command: `{document['command']}` (service at {document.get('commit', '?')}) — "
        f"machine: {m['nproc']} cores (`nproc`), {m['cpu']}, "
        f"{m['platform']}, Python {m['python']}, onnxruntime {m['onnxruntime']}. The service "
        f"as the README starts it ({s['workers']} workers, its defaults, "
        f"SERVING_POLL_INTERVAL_S={s['poll_interval_s']}, shadow queue 64 per worker); wrk "
        f"shares the cores. Each point: {s['rounds']} rounds of a {s['seconds']:.0f} s window "
        f"shadow off and one on (order alternating: OFF ON, ON OFF, ...), each switch waited "
        f"until every worker logged the new rules, then {s['warmup']:.0f} s of warm-up; the "
        "shadow queues are drained around every window and the counts are /metrics deltas. "
        "req/s is total requests over total time (the windows' own in brackets), latencies "
        "the median of the windows' wrk percentiles. Before each window the bench waits for "
        f"the machine to be at most {QUIET_SHARE:.0%} busy; a window in which other processes "
        f"took more than {OTHER_SHARE:.0%} of the machine is run again (up to {TRIES} tries; the "
        "least shared is kept).",
        "",
        "Requests: `POST /predict?model=<name>` (no version: v1, labelled stable), "
        "the fashion models one Fashion-MNIST test image as a JSON pixel array, circles one "
        "test vector. fashion-mnist: v2 a copy of the committed v1; fashion-mirror: the "
        "committed v1 and v2 (mirror-averaged: twice v1's work an image); circles: v2 a copy "
        "of v1.",
        "",
        "## Windows",
        "",
        "| model | c | shadow | req/s (windows) | p50 ms | p99 ms (windows) | errors | compared | "
        "dropped | compared % | machine CPU ms / req | shadow thread CPU s | other CPU s | "
        "steal % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in document["points"]:
        for side in ("off", "on"):
            x = p[side]
            offered = x["comparisons"] + x["dropped"]
            share = f"{100 * x['comparisons'] / offered:.1f}" if offered else "-"
            p99s = ", ".join(f"{w['p99_ms']:.1f}" for w in x["windows"])
            lines.append(
                f"| {p['model']} | {p['concurrency']} | {side.upper()} | {x['rps']:,.1f} "
                f"({', '.join(f'{v:,.0f}' for v in x['round_rps'])}) | {x['p50_ms']:.2f} | "
                f"{x['p99_ms']:.2f} ({p99s}) | "
                f"{x['errors']} | {x['comparisons']:,} | {x['dropped']:,} | "
                f"{share} | {x['cpu_ms_per_request']:.3f} | {x['shadow_thread_cpu_s']:.2f} | "
                f"{x['other_cpu_s']:.2f} | {x['steal_pct']:.1f} |"
            )
    lines += [
        "",
        "compared %: comparisons / (comparisons + dropped); machine CPU ms / req: the whole "
        "machine's busy time over the requests; other CPU s: the largest window's busy time "
        "neither the workers nor wrk account for (other processes).",
        "",
        "## ON / OFF",
        "",
        "t: the shadow version's in-process session.run for one request's batch (one thread); "
        "c: the machine's CPU time per request, shadow off; floor: c / (c + t), the "
        "throughput ratio if every request paid for its shadow run in full; shadow CPU ms / "
        "comparison: the shadow thread's CPU time in the service (session, comparison, its "
        "metrics) per instance it compared.",
        "",
        "| model | c | req/s ON/OFF | p50 ON/OFF | p99 ON/OFF | t ms | c ms | t / c | "
        "floor | compared % | shadow CPU ms / comparison |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in document["points"]:
        r = p["ratios"]
        per = r["shadow_thread_ms"]
        lines.append(
            f"| {p['model']} | {p['concurrency']} | {r['rps_ratio']:.3f} | "
            f"{r['p50_ratio']:.3f} | {r['p99_ratio']:.3f} | {r['shadow_ms']:.3f} | "
            f"{r['request_cpu_ms']:.3f} | {r['shadow_share']:.2f} | {r['rps_floor']:.3f} | "
            f"{r['compared_pct'] if r['compared_pct'] is not None else '-'} | "
            f"{'-' if per is None else f'{per:.3f}'} |"
        )
    seen = [(p["model"], p["concurrency"], p.get("shadow_view") or {}) for p in document["points"]]
    lines += [
        "",
        "What the shadow reported (GET /models/<name> after the point, every worker, the "
        "whole run so far):",
        "",
        "| model | after c | comparisons | agreement | mean abs delta | mean KL | dropped |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, c, view in seen:
        for x in view.get("comparisons", []):
            lines.append(
                f"| {model} | {c} | {x['comparisons']:,} | {x['agreement_rate']} | "
                f"{x['mean_abs_delta']} | {x['mean_kl']} | {x['dropped']:,} |"
            )
    lines += [
        "",
        "## In process: session.run, one thread",
        "",
        "| model/version | 1 instance ms | batch 32, ms an instance |",
        "|---|---|---|",
    ]
    for key, e in document["in_process"].items():
        lines.append(f"| {key} | {e['batch1_ms']:.4f} | {e['batch32_ms_per_instance']:.4f} |")
    lines += ["", "## Targets (concurrency 32)", "", "| target | measured | met |", "|---|---|---|"]
    lines += [
        f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
        for t in document["targets"]
    ]
    checks = document["checks"]
    lines += [
        "",
        "## Checks",
        "",
        f"- every instance v1 answered while ON was compared, counted dropped or failed: "
        f"{'yes' if checks['accounted'] else '**no**'} "
        f"({', '.join(checks['accounting'])})",
        f"- serving.json files the service could not use: {checks['config_errors']}",
        f"- the most CPU time other processes took in one kept window: "
        f"{checks['other_cpu_s']:.2f} s; windows run again because of them: "
        f"{checks['discarded']}",
        f"- service log lines other than INFO (besides the API-keys notice): "
        f"{checks['unexpected_log_lines']} (kept in `logs/service.log`)",
    ]
    return "\n".join(lines) + "\n"


def commit() -> str:
    """The commit the service runs from, "+dirty" where service/ has uncommitted changes."""
    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "service", "gunicorn.conf.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head + ("+dirty" if dirty else "")


def machine() -> dict:
    """What the numbers were measured on."""
    import onnxruntime

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": int(nproc) if nproc.isdigit() else os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def run(args: argparse.Namespace) -> dict:
    """The whole benchmark; returns the results document."""
    out_dir: Path = args.output
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    bodies = harness.payloads()
    points = []
    for spec in args.points:
        model, _, c = spec.partition(":")
        if model not in SOURCES:
            raise SystemExit(f"unknown model {model!r}: one of {sorted(SOURCES)}")
        points.append((model, int(c or 32)))
    document = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "bench.shadow", *args.argv]),
        "commit": commit(),
        "machine": machine(),
        "settings": {
            "points": args.points,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "workers": WORKERS,
            "poll_interval_s": POLL_INTERVAL_S,
            "sources": {
                k: [str(v[0].relative_to(ROOT)), str(v[1].relative_to(ROOT))]
                for k, v in SOURCES.items()
            },
        },
    }
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as work:
        work = Path(work)
        repo = work / "repo"
        differences = make_repository(repo)
        for name, fields in differences.items():
            if fields:
                raise SystemExit(
                    f"{name}: v1 and v2 differ in {fields}: the shadow compares neither"
                )
        wait_quiet(args.quiet_timeout)
        log.info("measuring session.run in process")
        document["in_process"] = in_process(repo, bodies, args.in_process_seconds)
        log_file = work / "service.log"
        document["points"] = []
        with service(repo, args.port, log_file) as master:
            for model, concurrency in points:
                body_file = work / f"{model}.body"
                body_file.write_bytes(bodies[SOURCES[model][2]])
                point = run_point(
                    repo, args.port, master, log_file, model, concurrency, args, body_file
                )
                shadow_ms = document["in_process"][f"{model}/{SHADOW_VERSION}"]["batch1_ms"]
                point["ratios"] = compare(point["off"], point["on"], shadow_ms)
                r = point["ratios"]
                log.info(
                    "%s c=%d: req/s ON/OFF %.3f (floor %.3f), p50 %.3f, p99 %.3f, compared %s%%",
                    model,
                    concurrency,
                    r["rps_ratio"],
                    r["rps_floor"],
                    r["p50_ratio"],
                    r["p99_ratio"],
                    r["compared_pct"],
                )
                document["points"].append(point)
        kept, unexpected = log_problems(log_file)
        (out_dir / "logs" / "service.log").write_text("".join(f"{line}\n" for line in kept))
    document["checks"] = {
        "accounted": all(p["ratios"]["accounted"] for p in document["points"]),
        "accounting": [
            f"{p['model']} c={p['concurrency']}: served {p['on']['served']:,}, compared "
            f"{p['on']['comparisons']:,} + dropped {p['on']['dropped']:,} + failed "
            f"{p['on'].get('failed', 0):,}"
            for p in document["points"]
        ],
        "config_errors": sum(
            p[s]["config_errors"] for p in document["points"] for s in ("off", "on")
        ),
        "unexpected_log_lines": unexpected,
        "discarded": sum(len(p["discarded"]) for p in document["points"]),
        "other_cpu_s": max(p[s]["other_cpu_s"] for p in document["points"] for s in ("off", "on")),
    }
    document["targets"] = targets(document)
    (out_dir / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / "README.md").write_text(markdown(document))
    return document


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.shadow",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--points",
        nargs="+",
        default=DEFAULT_POINTS,
        metavar="MODEL:C",
        help=f"model and concurrency per point (models: {', '.join(SOURCES)})",
    )
    parser.add_argument("--rounds", type=int, default=3, help="OFF and ON windows per point each")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per window")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after each switch")
    parser.add_argument("--in-process-seconds", type=float, default=1.5)
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=120.0,
        help="seconds to wait, before each window, for the machine to be quiet",
    )
    parser.add_argument("--port", type=int, default=18750)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "shadow")
    args = parser.parse_args(argv)
    args.argv = argv
    if not shutil.which("wrk"):
        parser.error("wrk is missing: apt-get install wrk (scripts/test.sh installs it)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    document = run(args)
    for check in document["targets"]:
        log.info("%s: %s (%s)", check["target"], check["measured"], "met" if check["met"] else "no")
    log.info("wrote %s", args.output / "README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
