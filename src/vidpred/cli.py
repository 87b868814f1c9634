"""The ``vidpred`` command line.

Each area registers its own subcommands (``register(subparsers)``), so this file
only wires them together and turns :class:`VidpredError` into a one-line message
and a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys

from vidpred.errors import VidpredError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    from vidpred.data import commands as data_commands
    from vidpred.evaluation import commands as eval_commands
    from vidpred.planning import commands as plan_commands
    from vidpred.reporting import commands as report_commands
    from vidpred.training import commands as train_commands
    from vidpred import demo

    parser = argparse.ArgumentParser(
        prog="vidpred",
        description="Action-conditioned stochastic video prediction (SVG-LP conditional VAE).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_commands.register(sub)
    train_commands.register(sub)
    eval_commands.register(sub)
    plan_commands.register(sub)
    report_commands.register(sub)
    demo.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from vidpred.runtime import tune_allocator

    tune_allocator()  # freed activations stay in the process for the next step (vidpred/runtime.py)
    try:
        result = args.func(args)
    except VidpredError as err:
        print(f"vidpred: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("vidpred: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
