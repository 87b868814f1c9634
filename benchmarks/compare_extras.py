"""The assignment's extras compared on the stochastic synthetic world, several seeds each.

Variants (cumulative), all trained with the ``synth-compare`` preset (the demo's model:
causal conditioning, transformation decoder) on the same data (hidden friction and
mass: a push's outcome is uncertain), for ``--seeds`` training seeds each:

    fixed prior     N(0, I) (SVG-FP)
    learned prior   SVG-LP, the assignment's extra (a)
    + cyclical KL   learned prior with cyclical instead of monotonic KL annealing
    + cond conv     learned prior, conditional convolution in the decoder, extra (c)
    + hierarchy     + two latent levels and the feature aligner, extra (b)

Each run is evaluated on the test split (2 -> 10, 10 samples, seed 0). The table gives,
per variant, mean and spread (min..max over the seeds) of: mean-sample PSNR, whole frame
and moving region; best of 10 minus mean sample on the moving region (what the latent
adds); KL per predicted frame.

    python benchmarks/compare_extras.py --work runs/compare --seeds 0 1 2 --table docs/results_extras.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from compare_runs import VIDPRED, emit_table, sh, train_and_evaluate

VARIANTS = [
    ("fixed prior", ["model.prior=fixed"]),
    ("learned prior", ["model.prior=learned"]),
    ("+ cyclical KL", ["model.prior=learned", "train.kl.schedule=cyclical", "train.kl.cycles=4"]),
    ("+ cond conv", ["model.prior=learned", "model.cond_conv=decoder"]),
    ("+ hierarchy", ["model.prior=learned", "model.cond_conv=decoder", "model.levels=2", "model.align=true"]),
]
SAMPLES = 10


def columns(ev: dict) -> dict[str, float]:
    m, lat = ev["model"], ev["latent"]
    return {
        "psnr": m["psnr"]["mean"]["average"],
        "psnr_moving": m["psnr_moving"]["mean"]["average"],
        "best_gain_moving": lat["best_of_n_gain_db"]["psnr_moving"],
        "kl": sum(lat["kl_per_frame"]),
        "margin_moving": ev["psnr_moving_margin_db"],
    }


def spread(values: list[float | None], fmt: str) -> str:
    """Mean (min..max) over the seeds; n/a where a value is missing (no moving pixel)."""
    if any(x is None for x in values):
        return "n/a"
    v = np.array(values, float)
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(v.mean())} ({fmt.format(v.min())}..{fmt.format(v.max())})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/compare"))
    ap.add_argument("--data", type=Path, default=Path("data/synth-compare"))
    ap.add_argument("--train", type=int, default=480)
    ap.add_argument("--validate", type=int, default=48)
    ap.add_argument("--test", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (train.seed)")
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    ap.add_argument("--only", nargs="+", default=None, help="variant names to run (default: all)")
    ap.add_argument("--table", type=Path, default=None)
    args = ap.parse_args()
    sh(*VIDPRED, "data", "synth", str(args.data), "--train", str(args.train), "--validate", str(args.validate),
       "--test", str(args.test), "--seed", "0", "--workers", "2")
    lines = [
        f"| variant | seeds | PSNR | PSNR moving | margin moving vs copy-last | best of {SAMPLES} - mean, moving "
        "| KL per frame (nats) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, overrides in VARIANTS:
        if args.only and name not in args.only:
            continue
        cols: dict[str, list[float]] = {}
        for seed in args.seeds:
            run = args.work / f"{name.strip('+ ').replace(' ', '-')}-s{seed}"
            extra = [f"data.root={args.data}", f"train.seed={seed}", *overrides]
            extra += [f"train.epochs={args.epochs}"] if args.epochs else []
            ev, _ = train_and_evaluate(run, "synth-compare", extra, samples=SAMPLES)
            for k, v in columns(ev).items():
                cols.setdefault(k, []).append(v)
        lines.append(
            f"| {name} | {len(args.seeds)} | {spread(cols['psnr'], '{:.2f}')} | {spread(cols['psnr_moving'], '{:.2f}')} "
            f"| {spread(cols['margin_moving'], '{:+.2f}')} | {spread(cols['best_gain_moving'], '{:+.2f}')} "
            f"| {spread(cols['kl'], '{:.3g}')} |"
        )
    emit_table(lines, args.table)


if __name__ == "__main__":
    main()
