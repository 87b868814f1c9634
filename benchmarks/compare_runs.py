"""Shared steps of the comparison scripts (``compare_extras.py``, ``compare_decoders.py``):
run a ``vidpred`` command, train a variant unless its run exists, evaluate it, write the table."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

VIDPRED = [sys.executable, "-m", "vidpred"]


def sh(*cmd: str) -> float:
    """Run ``cmd`` (echoed), fail on error; returns its wall-clock seconds."""
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def train_and_evaluate(run: Path, preset: str, overrides: list[str], samples: int = 5) -> tuple[dict, float | None]:
    """Train ``preset`` with ``overrides`` into ``run`` unless it holds a run already, then evaluate
    its test split (2 -> 10, ``samples`` samples, seed 0). Returns (eval_test.json, training
    seconds or None when the run was reused)."""
    seconds = None
    if not (run / "last.pt").exists():
        seconds = sh(*VIDPRED, "train", "--config", preset, "--out", str(run), "--no-progress", *overrides)
    sh(*VIDPRED, "evaluate", str(run), "--split", "test", "--samples", str(samples), "--seed", "0", "--no-progress")
    return json.loads((run / "eval_test.json").read_text()), seconds


def emit_table(lines: list[str], path: Path | None) -> None:
    """Print the markdown table and, with ``path``, write it there."""
    table = "\n".join(lines)
    print(table)
    if path:
        path.write_text(table + "\n")
