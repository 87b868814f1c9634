"""``vidpred data {convert,synth,check,cache}``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vidpred.data.layout import (ACTION_DIM, ACTIONS_FILE, POSITIONS_FILE, SEQ_LEN, SPLITS, list_sequences,
                                 read_sequence)
from vidpred.errors import DataError


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="prepare, check and cache datasets")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = sub.add_parser("convert", help="BAIR softmotion30_44k TFRecords -> processed PNG/CSV layout")
    p.add_argument("src", help="the softmotion30_44k folder (holding train/ and test/)")
    p.add_argument("dst", help="output root (must not exist unless --force)")
    p.add_argument("--validate-record", default="traj_256_to_511.tfrecords",
                   help="train record file carved out as the validation split (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("synth", help="generate the synthetic pushing dataset (pymunk physics)")
    p.add_argument("dst", help="output root")
    p.add_argument("--train", type=int, default=512, help="train sequences (default: %(default)s)")
    p.add_argument("--validate", type=int, default=64, help="validation sequences (default: %(default)s)")
    p.add_argument("--test", type=int, default=64, help="test sequences (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="parallel processes; the output does not depend on it (default: %(default)s)")
    p.add_argument("--hidden-causes", choices=("on", "off"), default="on",
                   help="objects get hidden friction and mass, so a push's outcome is uncertain; off gives "
                        "the deterministic world of vidpred <= 0.1 (default: %(default)s)")
    p.add_argument("--release", type=float, default=0.0,
                   help="share of the scripted arm's pushes that strike at full speed and stop dead, so a "
                        "slippery object glides on as under a planner (0 to 1; default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("check", help="validate every sequence of a processed-layout root")
    p.add_argument("root", help="dataset root in the processed layout")
    p.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="(default: all)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("cache", help="build or refresh the packed per-split caches")
    p.add_argument("root", help="dataset root in the processed layout")
    p.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="(default: all)")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the cache is fresh")
    p.add_argument("--verify", action="store_true", help="only verify; a missing or stale cache is an error")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    p.set_defaults(func=cmd_cache)


def cmd_convert(args: argparse.Namespace) -> int:
    from vidpred.data.convert import convert

    convert(args.src, args.dst, validate_record=args.validate_record, workers=args.workers,
            overwrite=args.force)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from vidpred.data.synth import generate

    generate(args.dst, args.train, args.validate, args.test, seed=args.seed, workers=args.workers,
             overwrite=args.force, hidden=args.hidden_causes == "on", release=args.release)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Read every file of every sequence; print a summary; fail on the first-found problems."""
    root = Path(args.root)
    if not root.is_dir():
        raise DataError(f"{root}: directory not found")
    problems: list[str] = []
    for split in args.splits:
        try:
            sequences = list_sequences(root, split)
        except DataError as err:
            problems.append(str(err))
            print(f"{split:9s} INVALID  {err}")
            continue
        bad = 0
        conds = []
        for _name, seq_dir in sequences:
            try:
                _, c = read_sequence(seq_dir)
                conds.append(c)
            except DataError as err:
                bad += 1
                problems.append(str(err))
                print(f"{split:9s} INVALID  {err}")
        line = f"{split:9s} {len(sequences)} sequences, {len(sequences) * SEQ_LEN} frames, {bad} invalid"
        if conds:
            c = np.concatenate(conds)
            line += (f"; {ACTIONS_FILE} range [{c[:, :ACTION_DIM].min():.3g}, {c[:, :ACTION_DIM].max():.3g}]"
                     f", {POSITIONS_FILE} range [{c[:, ACTION_DIM:].min():.3g}, {c[:, ACTION_DIM:].max():.3g}]")
        print(line)
    if problems:
        more = f" (and {len(problems) - 1} more problems listed above)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    print(f"{root}: all sequences valid")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from vidpred.data.cache import ensure_cache, load_manifest

    for split in args.splits:
        cache_dir = ensure_cache(args.root, split, rebuild=args.rebuild, verify_only=args.verify,
                                 workers=args.workers)
        n = load_manifest(cache_dir)["n"]
        print(f"{split:9s} {n} sequences cached in {cache_dir}")
    return 0
