"""Benchmark harness: this service beside the hardware limit and the alternatives users pick."""

import service  # noqa: F401  (first: every system's onnxruntime runs without its telemetry)
