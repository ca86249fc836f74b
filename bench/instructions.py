"""CPU instructions per request, counted by valgrind's callgrind: a deterministic measure.

Throughput on a shared 2-core machine moves by ±10% from run to run; the instructions one
request costs in process (WSGI app in, response out; no sockets) do not. Each tree (this one,
and with ``--baseline REF`` a git worktree of another commit) serves the same request body
through its own ``create_app()`` under ``valgrind --tool=callgrind``, counting only inside
the timed loop (``--toggle-collect`` on the C function that runs it).

    python -m bench.instructions --baseline b430d07        # fashion-json, 200 requests
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import ROOT, WORKLOADS, baseline_checkout, payloads

# Run inside the tree under test (its own service package), as valgrind's child process.
_PROBE = r"""
import functools, io, json, os, sys
sys.path.insert(0, os.getcwd())
from service.app import create_app
from service.settings import Settings

path, ctype, body_file, headers, n = sys.argv[1:6]
body = open(body_file, "rb").read()
headers = json.loads(headers)
app = create_app(Settings.from_env({}, log_level="INFO"))
path, _, query = path.partition("?")

def call(*_):
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_TYPE": ctype, "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body), "SERVER_NAME": "bench", "SERVER_PORT": "80",
               "wsgi.url_scheme": "http"}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    status = []
    b"".join(app.wsgi_app(environ, lambda s, h, e=None: status.append(s)))
    assert status[0].startswith("200"), status
    return 0

for _ in range(100):  # warm-up: first calls allocate, not counted
    call()
functools.reduce(call, range(int(n)), 0)  # callgrind counts inside this C function only
"""


def count(tree: Path, route: tuple, requests: int, workdir: Path) -> int:
    """Instructions for ``requests`` requests in ``tree`` (multiprocess metrics, INFO logs)."""
    path, ctype, body, headers = route
    body_file, probe = workdir / "body", workdir / "probe.py"
    body_file.write_bytes(body)
    probe.write_text(_PROBE)
    metrics_dir = workdir / f"metrics-{tree.name}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONHASHSEED": "0",
        "SERVING_MODEL_REPOSITORY": str(ROOT / "models"),
        "PYTHONPATH": str(tree),
    }
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=functools_reduce",
            f"--callgrind-out-file={workdir / 'callgrind.out'}",
            sys.executable,
            str(probe),
            path,
            ctype,
            str(body_file),
            json.dumps(headers),
            str(requests),
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if not found or int(found.group(1)) == 0:
        raise RuntimeError(f"callgrind counted nothing in {tree}:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--baseline", metavar="REF", help="also count this commit's service")
    parser.add_argument("--workloads", nargs="+", default=["fashion-json"], choices=list(WORKLOADS))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "instructions")
    args = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        parser.error("valgrind is missing: apt-get install valgrind")
    from bench.harness import systems

    trees = {"service": ROOT}
    if args.baseline:
        trees["baseline"] = baseline_checkout(args.baseline)
    routes = systems(0, payloads(), Path(tempfile.gettempdir()))["service"].routes
    document = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "bench.instructions", *argv]),
        "requests": args.requests,
        "baseline": args.baseline,
        "per_request": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads:
            for name, tree in trees.items():
                if "v2" in workload and not (tree / "service" / "protocols" / "v2.py").exists():
                    continue  # the protocol did not exist then
                total = count(tree, routes[workload], args.requests, Path(tmp))
                document["per_request"].setdefault(workload, {})[name] = round(
                    total / args.requests
                )
                print(f"{workload} {name}: {total / args.requests:,.0f} instructions/request")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    lines = [
        f"# Instructions per request ({document['created_at']})",
        "",
        f"Command: `{document['command']}`; callgrind, in process, {args.requests} "
        "requests after 100 of warm-up, multiprocess metrics and INFO logs on.",
        "",
        "| workload | system | instructions / request | vs baseline |",
        "|---|---|---|---|",
    ]
    for workload, counts in document["per_request"].items():
        for name, value in counts.items():
            base = counts.get("baseline")
            ratio = f"{(value / base - 1) * 100:+.1f}%" if base and name != "baseline" else ""
            lines.append(f"| {workload} | {name} | {value:,} | {ratio} |")
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
