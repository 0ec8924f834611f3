"""Benchmarks of d1store: side by side with its peers on SQLite, requests per call, scale, memory.

Run with ``python -m benchmarks``; ``python -m benchmarks --help`` lists the options.
"""
