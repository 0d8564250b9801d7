"""Benchmarks: measured side by side in one run, written to a file; never timed tests."""
