"""The systems the benchmark compares (each serves the same three workloads)."""
