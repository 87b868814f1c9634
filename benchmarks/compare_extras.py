"""The assignment's extras compared on the synthetic data under one budget.

Variants (cumulative), all trained with the ``synth-compare`` preset on the same
data, steps and seed:

    baseline        fixed prior N(0, I) (SVG-FP)
    +learned prior  SVG-LP, the assignment's extra (a)
    +cond conv      + conditional convolution in the decoder, extra (c)
    +hierarchy      + two latent levels and the feature aligner, extra (b)

Each is evaluated on the test split (2 -> 10, 5 samples, seed 0) and the table is
written to ``--table`` (markdown) and printed.

    python benchmarks/compare_extras.py --work runs/compare --table docs/results_table.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compare_runs import VIDPRED, emit_table, sh, train_and_evaluate

VARIANTS = [
    ("baseline", ["model.prior=fixed"]),
    ("+learned prior", ["model.prior=learned"]),
    ("+cond conv", ["model.prior=learned", "model.cond_conv=decoder"]),
    ("+hierarchy", ["model.prior=learned", "model.cond_conv=decoder", "model.levels=2", "model.align=true"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/compare"))
    ap.add_argument("--data", type=Path, default=Path("data/synth-compare"))
    ap.add_argument("--train", type=int, default=480)
    ap.add_argument("--validate", type=int, default=48)
    ap.add_argument("--test", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    ap.add_argument("--table", type=Path, default=None)
    args = ap.parse_args()
    sh(*VIDPRED, "data", "synth", str(args.data), "--train", str(args.train), "--validate", str(args.validate),
       "--test", str(args.test), "--seed", "0", "--workers", "2")
    rows = []
    for name, overrides in VARIANTS:
        run = args.work / name.strip("+").replace(" ", "-")
        extra = [f"data.root={args.data}", *overrides] + ([f"train.epochs={args.epochs}"] if args.epochs else [])
        ev, _ = train_and_evaluate(run, "synth-compare", extra)
        rows.append((name, ev))
    lines = [
        "| variant | PSNR first | PSNR mean | PSNR best of 5 | SSIM mean | copy-last PSNR | margin (dB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, ev in rows:
        m, c = ev["model"], ev["copy_last"]
        lines.append(
            f"| {name} | {m['psnr']['first']['average']:.2f} | {m['psnr']['mean']['average']:.2f} | "
            f"{m['psnr']['best']['average']:.2f} | {m['ssim']['mean']['average']:.4f} | "
            f"{c['psnr']['average']:.2f} | {ev['psnr_margin_db']:+.2f} |"
        )
    emit_table(lines, args.table)


if __name__ == "__main__":
    main()
