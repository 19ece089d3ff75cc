"""Benchmarks: ``leadflow bench`` (``bench.py``, ``startup.py``), the scoring, enrichment and
pipeline scripts, and the mutation check. The top of the house: they use every package below."""
