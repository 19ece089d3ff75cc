"""Thin wrapper: ``.venv/bin/python benchmarks/pipeline_bench.py --crm hubspot --leads 10000 [--json] ...``
is ``leadflow bench`` (see benchmarks/README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cli import bench  # noqa: E402

if __name__ == "__main__":
    import typer

    typer.run(bench)
