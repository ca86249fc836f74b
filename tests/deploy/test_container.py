"""The Dockerfile, checked without a Docker engine: lint, references, build context, and the
image's own install + start + health check reproduced in a fresh virtual environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.dockerfile import (
    copies,
    dockerignore_patterns,
    env_of,
    exec_form,
    in_build_context,
    parse,
)
from tests.e2e.conftest import call, free_port
from tests.helpers import ROOT

ARGS, STAGES = parse(ROOT / "Dockerfile")
RUNTIME = STAGES[-1]
BUILD = next(s for s in STAGES if s.name == "build")
IGNORE = dockerignore_patterns(ROOT / ".dockerignore")


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in out.stdout.splitlines() if (ROOT / line).exists()]


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_variants_and_bases():
    assert ARGS["VARIANT"] == "gpu"  # the default build is the GPU image
    assert re.fullmatch(
        r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", ARGS["CUDA_IMAGE"]
    )
    assert ARGS["PYTHON_IMAGE"].startswith("python:3.11-slim")
    names = [s.name for s in STAGES]
    assert names == ["base-gpu", "base-cpu", "build", "runtime"]
    assert RUNTIME.base == BUILD.base == "base-${VARIANT}"
    for stage in STAGES:  # nothing installs or copies the training side
        for _, args in stage.instructions:
            assert "tensorflow" not in args.lower()
            assert "training" not in args


def test_runtime_is_non_root_and_handles_signals():
    (user,) = RUNTIME.all("USER")
    assert user.split(":")[0] not in ("0", "root")
    assert RUNTIME.all("STOPSIGNAL") == ["SIGTERM"]
    command = exec_form(RUNTIME.all("CMD")[0])  # exec form: gunicorn is PID 1 and gets SIGTERM
    assert command[:2] == ["gunicorn", "-c"]
    assert env_of(RUNTIME)["SERVING_GRACEFUL_TIMEOUT"].isdigit()


def test_what_the_dockerfile_copies_and_runs_exists(monkeypatch, tmp_path):
    for stage in STAGES:
        for sources, _ in copies(stage):
            for source in sources:
                assert (ROOT / source).exists(), source
                assert in_build_context(
                    source.rstrip("/") + "/x" if source.endswith("/") else source, IGNORE
                ), source
    command = exec_form(RUNTIME.all("CMD")[0])
    config_in_image = command[2]
    destinations = {
        dest.rstrip("/") + "/" + Path(src[0]).name if dest.endswith("/") else dest
        for src, dest in copies(RUNTIME)
    }
    workdir = RUNTIME.all("WORKDIR")[-1]
    assert config_in_image in {
        str(Path(workdir) / d) if not d.startswith("/") else d for d in destinations
    }
    # The config names a factory that exists and is callable. Running it sets the metrics
    # environment of this process: the monkeypatch undoes that after the test.
    monkeypatch.setenv("SERVING_METRICS_DIR", str(tmp_path / "metrics"))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    namespace: dict = {}
    exec(compile((ROOT / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), namespace)
    module, _, factory = namespace["wsgi_app"].partition(":")
    assert factory == "create_app()"
    imported = __import__(module, fromlist=["create_app"])
    assert callable(imported.create_app)


def test_ports_paths_and_health_check_agree():
    env = env_of(RUNTIME)
    port = env["SERVING_BIND"].rsplit(":", 1)[1]
    assert RUNTIME.all("EXPOSE") == [port]
    models_dest = next(dest for src, dest in copies(RUNTIME) if src == ["models/"])
    assert env["SERVING_MODEL_REPOSITORY"].rstrip("/") == models_dest.rstrip("/")
    assert env["SERVING_METRICS_DIR"].startswith("/tmp/")  # tmpfs-friendly, writable
    health = RUNTIME.all("HEALTHCHECK")[0]
    assert f"http://127.0.0.1:{port}/health/live" in health
    from service.protocols.routes import ROUTES

    rules = {r.template for r in ROUTES if r.method == "GET"}
    assert "/health/live" in rules


def test_build_context_holds_only_what_the_image_needs():
    files = _tracked_files()
    sent = {f for f in files if in_build_context(f, IGNORE)}
    assert "pyproject.toml" in sent
    assert "service/app.py" in sent
    assert "models/fashion-mnist/1/model.onnx" in sent
    assert "models/fashion-mnist/1/metadata.json" in sent
    assert "docker/install.sh" in sent
    for excluded in (
        "tests/",
        "training/",
        ".venv/",
        "docs/",
        "deploy/",
        "monitoring/",
        "models/fashion-mnist/1/report/",
        "scripts/",
    ):
        assert not any(f.startswith(excluded) for f in sent), excluded
    assert not in_build_context(".git/config", IGNORE)
    assert not in_build_context("service/__pycache__/app.cpython-311.pyc", IGNORE)


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def image_root(request, tmp_path_factory):
    """The image's filesystem, staged in a folder: the build stage's virtual environment made
    by the Dockerfile's own install script, then what the runtime stage COPYs."""
    variant = request.param
    root = tmp_path_factory.mktemp(f"image-{variant}")
    build_dir = root / "src"
    for sources, dest in copies(BUILD):  # Docker's COPY: a directory's contents go into dest
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(
                    ROOT / source,
                    build_dir / dest,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"),
                )
            else:
                target = (
                    build_dir / dest / Path(source).name
                    if dest.endswith("/")
                    else (build_dir / dest)
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target)
    (run,) = BUILD.all("RUN")
    assert run == 'sh docker/install.sh /opt/venv "${VARIANT}"'
    venv = root / "opt" / "venv"
    # The environment's pip settings (index, certificates) stand in for the builder's network.
    env = {**os.environ, "VENV_PYTHON": os.path.realpath(sys.executable)}
    out = subprocess.run(
        ["sh", "docker/install.sh", str(venv), variant],
        cwd=build_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "serving environment ready" in out.stdout
    app_dir = root / "app"
    app_dir.mkdir()
    shutil.copy2(ROOT / "gunicorn.conf.py", app_dir / "gunicorn.conf.py")
    shutil.copytree(
        ROOT / "models", root / "models", ignore=shutil.ignore_patterns("report", ".staging-*")
    )
    return variant, root, venv


def _installed(venv: Path) -> set[str]:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {line.split("==")[0].lower().replace("_", "-") for line in out.stdout.splitlines()}


@pytest.mark.slow
def test_image_install_has_serving_dependencies_only(image_root):
    variant, _, venv = image_root
    installed = _installed(venv)
    assert {"flask", "gunicorn", "numpy", "pillow", "prometheus-client"} <= installed
    assert not installed & {"tensorflow", "keras", "tf2onnx", "scikit-learn", "matplotlib"}
    runtime = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}[variant]
    assert runtime in installed
    assert not installed & ({"onnxruntime", "onnxruntime-gpu"} - {runtime})  # never both


@pytest.mark.slow
def test_image_starts_serves_and_passes_its_health_check(image_root):
    _, root, venv = image_root
    port = free_port()
    env = {
        **env_of(RUNTIME),
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "HOME": str(root),
        # The image's absolute paths, relocated under the staged root:
        "SERVING_BIND": f"127.0.0.1:{port}",
        "SERVING_MODEL_REPOSITORY": str(root / "models"),
        "SERVING_METRICS_DIR": str(root / "tmp" / "serving-metrics"),
    }
    command = exec_form(RUNTIME.all("CMD")[0])
    command[2] = str(root / "app" / "gunicorn.conf.py")
    process = subprocess.Popen(
        [str(venv / "bin" / command[0]), *command[1:]],
        cwd=root / "app",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "gunicorn exited"
            assert time.monotonic() < deadline, "not ready in 60 s"
            try:
                if call("GET", f"http://127.0.0.1:{port}/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        health = exec_form(RUNTIME.all("HEALTHCHECK")[0].split(" CMD ", 1)[1])
        probe = [str(venv / "bin" / health[0]), *health[1:]]
        probe[-1] = probe[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        assert subprocess.run(probe, env=env, timeout=10).returncode == 0
        png = (ROOT / "docs" / "examples" / "ankle-boot.png").read_bytes()
        status, _, body = call("POST", f"http://127.0.0.1:{port}/predict", png, "image/png")
        assert status == 200
        assert body["predictions"][0]["label"] == "Ankle boot"
        assert body["model"]["provider"] == "CPUExecutionProvider"  # no GPU on this machine
    finally:
        process.terminate()
        process.wait(timeout=30)
