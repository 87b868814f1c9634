"""Where a planning step's time goes: one CEM plan of the model arm, its rollouts, its cost and the model's parts.

Loads RUN, binds the model arm's predictor (``vidpred plan``'s, tracked cost) to the first task of
``--seed`` and times, ``--repeat`` times each (the median is printed, the range beside it):

* one plan (CEM at the default budget, or ``--samples`` / ``--iterations`` / ``--horizon``): what
  ``vidpred plan`` reports per executed step when it replans after every step;
* one iteration's rollouts (``--samples`` candidates over the horizon);
* the cost read from them (the tracked colour centroid);

then, over one more iteration's rollouts, the wall time spent inside each part of the model (the
encoder, the decoder, the pose maps, the LSTMs, the transformation head's moves and composites);
"the rest" is the step loop's own work (concatenations, noise, clamping).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/plan_step.py RUN [--samples 60] [--iterations 3] \\
        [--horizon 10] [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from vidpred.errors import ConfigError
from vidpred.planning.cem import CEM, CEMConfig, clip_moves, full_actions
from vidpred.planning.cost import colour_track
from vidpred.planning.env import PushEnv, find_tasks
from vidpred.planning.mpc import make_predictor
from vidpred.training.checkpoint import load_model

PARTS = ("encoder", "decoder", "pose", "predictor", "prior", "posterior", "transform")


def timed(samples: list[float], fn):
    start = time.perf_counter()
    out = fn()
    samples.append(time.perf_counter() - start)
    return out


def part_times(model, fn) -> dict[str, float]:
    """Seconds spent inside each of the model's parts (:data:`PARTS`) while ``fn()`` runs; the
    parts' methods are wrapped on their instances and restored after."""
    spent: dict[str, float] = defaultdict(float)
    wrapped = []
    for name in PARTS:
        part = getattr(model, name, None)
        modules = list(part) if isinstance(part, torch.nn.ModuleList) else [part] if part is not None else []
        for module in modules:
            for method in ("forward", "forward_coords"):
                if not hasattr(module, method):
                    continue
                original = getattr(module, method)

                def clock(*a, _f=original, _name=name, **k):
                    start = time.perf_counter()
                    try:
                        return _f(*a, **k)
                    finally:
                        spent[_name] += time.perf_counter() - start

                setattr(module, method, clock)
                wrapped.append((module, method))
    try:
        fn()
    finally:
        for module, method in wrapped:
            delattr(module, method)  # back to the class's method
    return dict(spent)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=CEMConfig.samples)
    ap.add_argument("--iterations", type=int, default=CEMConfig.iterations)
    ap.add_argument("--horizon", type=int, default=CEMConfig.horizon)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.repeat < 1 or args.threads < 1 or args.seed < 0:
        raise SystemExit(f"--repeat and --threads must be >= 1 and --seed >= 0, got {args.repeat}, {args.threads} "
                         f"and {args.seed}")
    try:
        cfg = CEMConfig(samples=args.samples, iterations=args.iterations, horizon=args.horizon)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    torch.set_num_threads(args.threads)
    model, run_cfg, _ = load_model(args.run)
    n_past = run_cfg.train.n_past
    task = find_tasks(args.seed, 1)[0]
    env = PushEnv(task, n_past)
    predictor = make_predictor("model", task, args.seed, n_past, model)
    predictor.bind(env)
    fixed = (0.0, env.gripper)
    rng = np.random.default_rng(args.seed)
    moves = clip_moves(rng.normal(0.0, cfg.init_std, (cfg.samples, cfg.horizon, 2)), cfg.action_limit)
    actions = full_actions(moves, fixed)  # one iteration's candidates, as CEM's first draws them
    predictor(actions)  # warm-up: first-call allocations
    plans, rollouts, costs = [], [], []
    for r in range(args.repeat):
        timed(plans, lambda: CEM(cfg, np.random.default_rng(r)).plan(predictor, fixed))
        frames = timed(rollouts, lambda: predictor._rollouts(actions))
        timed(costs, lambda: colour_track(frames, predictor.colour, predictor.prior_xy))
    total = []
    parts = part_times(model, lambda: timed(total, lambda: predictor._rollouts(actions)))

    def row(name: str, s: list[float]) -> str:
        return f"{name:34s} {np.median(s):7.3f} s  ({min(s):.3f}-{max(s):.3f}, {len(s)} runs)"

    print(f"{args.run}: task {task.index} of seed {args.seed}, {cfg.samples} samples x {cfg.iterations} iterations, "
          f"horizon {cfg.horizon}, {torch.get_num_threads()} threads")
    print(row("one plan", plans))
    print(row("one iteration's rollouts", rollouts))
    print(row("its cost (tracked colour centroid)", costs))
    print(f"inside one iteration's rollouts ({total[0]:.3f} s):")
    for name in PARTS:
        if name in parts:
            print(f"  {name:12s} {parts[name]:6.3f} s  {parts[name] / total[0]:4.0%}")
    rest = total[0] - sum(parts.values())
    print(f"  {'the rest':12s} {rest:6.3f} s  {rest / total[0]:4.0%}")


if __name__ == "__main__":
    main()
