"""Benchmarks, run by hand and never by the test suite (``python -m benchmarks.signin``)."""
