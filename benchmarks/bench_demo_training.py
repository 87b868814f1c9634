"""The demo's training stage on any pair of presets: its throughput, as the speed issue counts it.

`vidpred demo` trains two runs (monotonic and cyclical KL annealing) side by side, each in a
process of its own with an equal share of the CPU threads. This script runs that same stage
(``vidpred.demo._train_parallel``) on a dataset and two presets or YAML files of your choice, so
that the demo's training can be timed on a model other than today's presets, for example the
presets of an older commit, against that commit's own `vidpred demo`. It prints, per run, the
seconds and the sequences per second (the harmonic mean of ``seq_per_s`` over
``metrics.jsonl``'s step lines), and the stage's wall time and sequences per second.

    .venv/bin/python benchmarks/bench_demo_training.py DATA OUT [--presets A B] [--jobs 2] [KEY=VALUE ...]

OUT must not hold runs (a run found there would be resumed, not timed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def harmonic_seq_per_s(run: Path) -> float:
    """Total sequences over total time of a run's step lines (each covers ``log_every`` steps)."""
    from vidpred.training.trainer import read_metrics

    rates = [rec["seq_per_s"] for rec in read_metrics(run) if rec.get("kind") == "step"]
    if not rates:
        raise SystemExit(f"{run / 'metrics.jsonl'}: no step lines")
    return len(rates) / sum(1.0 / r for r in rates)


def main() -> int:
    import torch

    from vidpred import runtime
    from vidpred.config import load_config
    from vidpred.data.layout import list_sequences
    from vidpred.errors import VidpredError
    from vidpred.demo import RUNS, _train_parallel

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="dataset root (for example one made by `vidpred data synth`)")
    ap.add_argument("out", type=Path, help="new folder for the two runs")
    ap.add_argument("--presets", nargs=2, default=[p for _, p in RUNS], metavar=("MONOTONIC", "CYCLICAL"),
                    help="presets or YAML files (default: the demo's, %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (default: %(default)s, the demo's)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides for both runs")
    args = ap.parse_intermixed_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out}: exists and is not empty; choose a new folder")
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    runtime.tune_allocator()  # as the CLI does for `vidpred demo`
    plan = tuple(zip(("monotonic", "cyclical"), args.presets))
    runs = [args.out / "runs" / name for name, _ in plan]
    threads = max(1, torch.get_num_threads() // args.jobs)
    try:
        n_train = len(list_sequences(args.data, "train"))  # sizes the progress bars, which are off here
    except VidpredError as err:
        raise SystemExit(f"bench_demo_training: {err}") from None
    overrides = [f"data.root={args.data}", "train.device=cpu", *args.overrides]
    t0 = time.perf_counter()
    done = _train_parallel(plan, runs, overrides, args.jobs, threads, False, n_train)
    wall = time.perf_counter() - t0
    print(f"torch {torch.__version__}, {args.jobs} run(s) at once x {threads} thread(s)")
    sequences = 0
    for (name, _), run in zip(plan, runs):
        summary, seconds = done[name]
        sequences += summary["steps"] * load_config(str(run / "config.yaml")).train.batch_size
        print(f"{name:10s} {summary['steps']} steps in {seconds:.1f} s, {harmonic_seq_per_s(run):.1f} seq/s")
    print(f"training stage: {wall:.1f} s, {sequences / wall:.1f} seq/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
