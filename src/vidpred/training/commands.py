"""``vidpred train``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidpred.config import load_config, preset_names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (single process, or many under torchrun)",
        description="Train the conditional VAE. Overrides are dotted key=value pairs, e.g. "
        "train.epochs=50 model.codec=vgg64 train.kl.schedule=cyclical. "
        f"Presets: {', '.join(preset_names())}.",
    )
    p.add_argument("--config", default=None, help="a preset name or a YAML file (default: built-in defaults)")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, logs, config.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vidpred.training.checkpoint import LAST, load
    from vidpred.training.trainer import train

    if args.resume and args.config is None and (args.out / LAST).is_file():
        # The run's own config is the record; overrides (e.g. more epochs) apply on top of it.
        from vidpred.config import Config, _merge, parse_override

        d = load(args.out / LAST)["config"]
        for o in args.overrides:
            d = _merge(d, parse_override(o))
        cfg = Config.from_dict(d)
    else:
        cfg = load_config(args.config, args.overrides)
    summary = train(cfg, args.out, resume=args.resume, progress=False if args.no_progress else None)
    print(json.dumps(summary))
    return 0
