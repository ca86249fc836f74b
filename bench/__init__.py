"""Benchmark harness: this service beside the hardware limit and the alternatives users pick."""
