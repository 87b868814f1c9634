"""Pixel decoder vs transformation decoder on the demo's data, at about the same wall-clock budget.

    pixel         the lab's / SVG's decoder: paints every pixel from (g_t, skips of the last observed frame)
    cdna-colours  moves the previous frame's pixels with predicted kernels and composites them with
                  observed backgrounds and a generated image (``model.decoder=cdna``, skips from x_{t-1})
    cdna          the preset: the same, moving source coordinates instead of colours (``model.coords``)

Both train the demo's preset (``synth-cpu``) on the demo's data (240 / 24 / 32
sequences, seed 0); the pixel decoder's steps are cheaper, so it gets more epochs
(``--pixel-epochs``) for about the same training time, which the table reports as
measured. Each run's best checkpoint is evaluated on the test split (2 -> 10, 5
samples, seed 0), whole frame and moving region, and its grid and GIF of test
sequence 0 are written under ``--work/<run>-pics``.

The comparison keeps the setting it was measured in (docs/results.md): the
deterministic world (``--hidden-causes off``) and the lab's conditioning
(``model.condition=lab``), which the synthetic presets no longer use.

    python benchmarks/compare_decoders.py --work runs/decoders --table docs/decoders_table.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compare_runs import VIDPRED, emit_table, sh, train_and_evaluate

PIXEL = ["model.decoder=pixel", "model.skip_frame=last", "model.coords=false", "model.arm_shift=false"]
SETTING = ["model.condition=lab"]  # as measured: the lab's conditioning (see the docstring)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/decoders"))
    ap.add_argument("--data", type=Path, default=Path("data/synth-demo"))
    ap.add_argument("--cdna-epochs", type=int, default=None, help="default: the preset's")
    ap.add_argument("--pixel-epochs", type=int, default=41,
                    help="epochs of the pixel decoder (default %(default)s: about the cdna run's time on 2 cores)")
    ap.add_argument("--table", type=Path, default=None)
    args = ap.parse_args()
    sh(*VIDPRED, "data", "synth", str(args.data), "--train", "240", "--validate", "24", "--test", "32",
       "--seed", "0", "--workers", "2", "--hidden-causes", "off")
    cdna_epochs = [] if args.cdna_epochs is None else [f"train.epochs={args.cdna_epochs}"]
    variants = [
        ("pixel", PIXEL + [f"train.epochs={args.pixel_epochs}"]),
        ("cdna-colours", ["model.coords=false"] + cdna_epochs),
        ("cdna", cdna_epochs),  # the preset: coordinates moved, not colours
    ]
    rows = []
    for name, overrides in variants:
        run = args.work / name
        ev, seconds = train_and_evaluate(run, "synth-cpu", [f"data.root={args.data}", *SETTING, *overrides])
        sh(*VIDPRED, "predict", str(run), "--split", "test", "--index", "0", "--out", str(args.work / f"{name}-pics"))
        epochs = sum(1 for line in (run / "metrics.jsonl").read_text().splitlines() if '"kind": "epoch"' in line)
        rows.append((name, ev, seconds, epochs))
    lines = [
        "| decoder | train s | epochs | PSNR mean | SSIM mean | PSNR moving | SSIM moving | best-of-5 moving "
        "| margin (dB) | moving margin (dB) | steps with SSIM > copy-last |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ev, seconds, epochs in rows:
        m, c = ev["model"], ev["copy_last"]
        above = sum(a > b for a, b in zip(m["ssim"]["mean"]["per_step"], c["ssim"]["per_step"]))
        lines.append(
            f"| {name} | {'-' if seconds is None else f'{seconds:.0f}'} | {epochs} | "
            f"{m['psnr']['mean']['average']:.2f} | {m['ssim']['mean']['average']:.3f} | "
            f"{m['psnr_moving']['mean']['average']:.2f} | {m['ssim_moving']['mean']['average']:.3f} | "
            f"{m['psnr_moving']['best']['average']:.2f} | {ev['psnr_margin_db']:+.2f} | "
            f"{ev['psnr_moving_margin_db']:+.2f} | {above} of {len(c['ssim']['per_step'])} |"
        )
    c = rows[0][1]["copy_last"]
    lines.append(f"| copy last frame | | | {c['psnr']['average']:.2f} | {c['ssim']['average']:.3f} | "
                 f"{c['psnr_moving']['average']:.2f} | {c['ssim_moving']['average']:.3f} | | | | |")
    emit_table(lines, args.table)


if __name__ == "__main__":
    main()
