"""``vidpred plot`` and ``vidpred report``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="training curves of one or more runs on one figure",
        description="Loss, MSE, KL and validation PSNR against the optimiser step, with the KL weight "
        "(beta / beta_max) and the teacher-forcing ratio on a second axis; several runs share the figure.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders")
    p.add_argument("--out", type=Path, default=None,
                   help="PNG file (default: RUN/curves.png for one run, curves.png for several)")
    p.add_argument("--labels", nargs="+", default=None, help="legend names, one per run (default: folder names)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "report",
        help="static HTML page comparing runs: configs, curves, GIFs, grids, evaluation tables",
        description="Write DIR/index.html with every picture under DIR (relative links). Each run's "
        "eval_<split>.json is computed first when missing or older than its checkpoint.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--split", default="test", choices=("train", "validate", "test"), help="(default: %(default)s)")
    p.add_argument("--index", type=int, default=0, help="sequence shown in the pictures (default: %(default)s)")
    p.add_argument("--samples", type=int, default=5, help="samples per sequence in the evaluation (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--max-sequences", type=int, default=None, help="evaluate only the first N sequences")
    p.add_argument("--no-eval", action="store_true", help="use existing evaluations only; never compute one")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="(default: %(default)s)")
    p.add_argument("--title", default="vidpred report")
    p.set_defaults(func=cmd_report)


def cmd_plot(args: argparse.Namespace) -> int:
    from vidpred.errors import ConfigError
    from vidpred.reporting.plots import plot_training

    if args.labels is not None and len(args.labels) != len(args.runs):
        raise ConfigError(f"--labels needs one name per run ({len(args.runs)}), got {len(args.labels)}")
    out = args.out or (args.runs[0] / "curves.png" if len(args.runs) == 1 else Path("curves.png"))
    path = plot_training(args.runs, out, labels=args.labels)
    print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vidpred.reporting.report import build_report

    path = build_report(args.runs, args.out, split=args.split, index=args.index, evaluate=not args.no_eval,
                        samples=args.samples, seed=args.seed, max_sequences=args.max_sequences,
                        device=args.device, title=args.title)
    print(f"report: {path}")
    return 0
