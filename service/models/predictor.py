"""One model version in onnxruntime: load(), predict(batch) -> logits."""

from __future__ import annotations

import ctypes
import logging
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service import metrics
from service.contract import metadata as contract

log = logging.getLogger(__name__)


_CUDA = "CUDAExecutionProvider"
_shared_arena = threading.Lock()  # held while the process-wide CPU arena is registered
_arena_registered = False


def share_cpu_arena(options: ort.SessionOptions) -> None:
    """Make the session draw its CPU memory from one arena for the whole process.

    Each session's own arena keeps its largest activations for as long as it lives; with
    many models those add up (100 model versions in one process: 177 MB of sessions with
    their own arenas, 136 MB sharing one, at the same speed; ``python -m bench.scaling``).
    """
    global _arena_registered
    with _shared_arena:
        if not _arena_registered:
            info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            ort.create_and_register_allocator(info, None)
            _arena_registered = True
    options.add_session_config_entry("session.use_env_allocators", "1")


def usable_providers(requested: Sequence[str]) -> tuple[list[str], str | None]:
    """The requested providers minus CUDA where its libraries are missing, and why.

    Asking onnxruntime for CUDA without them prints non-JSON error lines from every worker;
    probing the provider library first costs one ``dlopen``. Only a missing shared object
    counts as missing (anything else is left for onnxruntime to decide).
    """
    if _CUDA not in requested:
        return list(requested), None
    if _CUDA not in ort.get_available_providers():
        return [p for p in requested if p != _CUDA], "this onnxruntime build has no CUDA"
    capi = Path(ort.__file__).parent / "capi"
    try:
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(capi / "libonnxruntime_providers_cuda.so"))
    except OSError as exc:
        missing = re.search(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object", str(exc))
        if missing:
            return [p for p in requested if p != _CUDA], f"{missing.group(1)} is not installed"
    return list(requested), None


class OnnxPredictor:
    """Wraps an ``onnxruntime.InferenceSession``; input/output names come from the session."""

    def __init__(
        self,
        version_dir: Path,
        metadata: dict[str, Any],
        providers: Sequence[str],
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        max_rows: int = 32,
    ) -> None:
        self.path = Path(version_dir) / contract.MODEL_FILE
        self.metadata = metadata
        self.name: str = metadata["name"]
        self.version: int = metadata["version"]
        self.requested_providers = list(providers)
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.session: ort.InferenceSession | None = None
        self.providers: list[str] = []
        self.input_name = ""
        self.output_name = ""
        self.load_seconds = 0.0
        self.meters = metrics.ModelMeters(self.name, self.version)
        # Rows per session.run: a larger batch runs in slices, so a big request's activation
        # memory stays that of max_rows instances (onnxruntime holds every layer's output).
        self.max_rows = max(1, max_rows)

    @property
    def ready(self) -> bool:
        """A session exists and answered a warm-up call."""
        return self.session is not None

    @property
    def provider(self) -> str:
        """The execution provider that runs this model (the session's first)."""
        return self.providers[0] if self.providers else "none"

    def load(self) -> None:
        """Create the session with the requested providers, record which ones it got, warm up."""
        started = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # CUDA-missing notices are logged by us, once, below
        share_cpu_arena(options)
        session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=self.requested_providers
        )
        (inp,) = session.get_inputs()
        (out,) = session.get_outputs()
        if (
            inp.name != self.metadata["input"]["name"]
            or out.name != self.metadata["output"]["name"]
        ):
            raise contract.MetadataError(
                f"{self.path}: session has input {inp.name!r} and output {out.name!r}, "
                f"metadata.json says {self.metadata['input']['name']!r} and "
                f"{self.metadata['output']['name']!r}"
            )
        self.input_name, self.output_name = inp.name, out.name
        self.providers = session.get_providers()
        shape = [1, *self.metadata["input"]["shape"][1:]]
        session.run([self.output_name], {self.input_name: np.zeros(shape, np.float32)})
        self.session = session
        self.load_seconds = time.perf_counter() - started
        if self.requested_providers and self.provider != self.requested_providers[0]:
            log.warning(
                "model %s v%s: %s unavailable, running on %s",
                self.name,
                self.version,
                self.requested_providers[0],
                self.provider,
            )

    def predict(self, batch: np.ndarray, timings: list | None = None) -> np.ndarray:
        """Logits for a float32 batch shaped like the model's input, ``max_rows`` rows per
        onnxruntime call; each call is timed (into the model's metrics, or, given
        ``timings``, appended there as (seconds, rows) for the caller to record later)."""
        if self.session is None:
            raise RuntimeError(f"model {self.name} v{self.version} is not loaded")
        if batch.shape[0] <= self.max_rows:
            return self._run(batch, timings)
        return np.concatenate(
            [
                self._run(batch[start : start + self.max_rows], timings)
                for start in range(0, batch.shape[0], self.max_rows)
            ]
        )

    def _run(self, batch: np.ndarray, timings: list | None) -> np.ndarray:
        started = time.perf_counter()
        (logits,) = self.session.run([self.output_name], {self.input_name: batch})
        if timings is not None:
            timings.append((time.perf_counter() - started, batch.shape[0]))
            return logits
        self.meters.inference.observe(time.perf_counter() - started)
        self.meters.batch_size.observe(batch.shape[0])
        return logits
