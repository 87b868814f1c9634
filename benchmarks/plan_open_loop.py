"""One plan per task, executed open loop: a quick screen of planner settings (synthetic world).

For each of the first ``--tasks`` tasks of ``--seed`` (the tasks of ``vidpred plan``), CEM plans
once from the task's start with each variant and the simulator executes the whole plan (horizon
steps) without replanning. Printed per variant: the share of tasks that end within the success
radius and the mean final distance in px. A variant is ``READING:PICK``: READING is ``final`` or
``tracked`` (the model arm's ``--cost``) or ``sim`` (the simulator as the model); PICK is
``best`` (the best sequence scored) or ``mean`` (CEM's final elite mean): ``vidpred plan
--execute``. READING ``ensemble`` is the tracked cost averaged over RUN and the runs of
``--ensemble RUN2 ...`` (each model rolls every candidate out under its own latent noise): where
the members err differently, CEM can exploit one model's errors less. Closed loop (``vidpred
plan``) is what the planning targets score; this is a cheaper screen of what the model's
imagination lets one plan do (docs/results.md).

    .venv/bin/python benchmarks/plan_open_loop.py RUN --tasks 30 --no-still --move-cost 0 \\
        --variants sim:best final:best tracked:best tracked:mean
    .venv/bin/python benchmarks/plan_open_loop.py RUN --tasks 50 --variants tracked:best ensemble:best \\
        --ensemble RUN2 RUN3
"""

from __future__ import annotations

import argparse

import numpy as np

from vidpred.errors import ConfigError
from vidpred.planning import defaults
from vidpred.planning import env as env_mod
from vidpred.planning.cem import CEM, CEMConfig
from vidpred.planning.mpc import arm_rng, make_predictor
from vidpred.training.checkpoint import load_model

PICKS = defaults.EXECUTES  # what vidpred plan --execute may name
READINGS = (*defaults.COSTS, "sim", "ensemble")


def parse_variant(text: str) -> tuple[str, str]:
    reading, _, pick = text.partition(":")
    if reading not in READINGS or pick not in PICKS:
        raise SystemExit(f"--variants: expected READING:PICK with READING one of {', '.join(READINGS)} "
                         f"and PICK one of {', '.join(PICKS)}, got {text!r}")
    return reading, pick


class Ensemble:
    """``predict`` over several models: each member's tracked cost (its own predictor), averaged."""

    def __init__(self, predictors: list) -> None:
        self.predictors = predictors

    def bind(self, env) -> None:
        for p in self.predictors:
            p.bind(env)

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        return np.mean([p(actions) for p in self.predictors], axis=0)


def open_loop(model, task, reading: str, pick: str, cfg: CEMConfig, seed: int, n_past: int,
              members: tuple = ()) -> float:
    """The true final distance (px) of one plan from the task's start, executed open loop.
    ``members``: the models the ``ensemble`` reading averages over besides ``model``."""
    env = env_mod.PushEnv(task, n_past)
    cem = CEM(cfg, arm_rng(seed, task.index, "model"))
    if reading == "sim":
        predictor = make_predictor("simulator", task, seed, n_past)
    elif reading == "ensemble":
        predictor = Ensemble([make_predictor("model", task, seed, n_past, m) for m in (model, *members)])
    else:
        predictor = make_predictor("model", task, seed, n_past, model, cost=reading)
    predictor.bind(env)
    fixed = (0.0, env.gripper)
    plan = cem.plan(predictor, fixed)
    actions = plan.best if pick == "best" else plan.mean
    for a in actions:
        env.step(a)
    return env.distance()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", nargs="+", default=["sim:best", "final:best", "tracked:best"])
    ap.add_argument("--still", action=argparse.BooleanOptionalAction, default=defaults.STILL,
                    help="as vidpred plan's (default: %(default)s)")
    ap.add_argument("--move-cost", type=float, default=defaults.MOVE_COST,
                    help="as vidpred plan's (default: %(default)s)")
    ap.add_argument("--ensemble", nargs="+", default=[], metavar="RUN",
                    help="the other members of the ensemble reading's models")
    args = ap.parse_args()
    if args.tasks < 1 or args.seed < 0:
        raise SystemExit(f"--tasks must be >= 1 and --seed >= 0, got {args.tasks} and {args.seed}")
    args.variants = list(dict.fromkeys(args.variants))  # each variant once
    variants = [parse_variant(v) for v in args.variants]
    try:
        cfg = CEMConfig(still=args.still, move_cost=args.move_cost)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    if any(reading == "ensemble" for reading, _ in variants) != bool(args.ensemble):
        raise SystemExit("--ensemble RUN ... and a variant ensemble:PICK go together")
    model, run_cfg, _ = load_model(args.run)
    members = []
    for other in args.ensemble:
        m, other_cfg, _ = load_model(other)
        if other_cfg.train.n_past != run_cfg.train.n_past:
            raise SystemExit(f"--ensemble {other}: trained with train.n_past={other_cfg.train.n_past}, "
                             f"{args.run} with {run_cfg.train.n_past}")
        members.append(m)
    finals = {v: [] for v in args.variants}
    for task in env_mod.find_tasks(args.seed, args.tasks):
        for name, (reading, pick) in zip(args.variants, variants):
            finals[name].append(open_loop(model, task, reading, pick, cfg, args.seed, run_cfg.train.n_past, members))
        print(f"task {task.index}: " + ", ".join(f"{v} {finals[v][-1]:.2f}" for v in args.variants), flush=True)
    for name in args.variants:
        d = np.array(finals[name])
        print(f"{name:14s} success {np.mean(d <= env_mod.SUCCESS_RADIUS_PX):.0%}  mean final {d.mean():.2f} px "
              f"({len(d)} tasks, one plan each, open loop)")


if __name__ == "__main__":
    main()
