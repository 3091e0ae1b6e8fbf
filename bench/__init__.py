"""Benchmarks and the GPU suite. Benchmarks report numbers; they are not tests."""
