"""Benchmarks: ``goldenflow bench``."""
