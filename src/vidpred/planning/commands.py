"""``vidpred plan``: visual MPC with a run's model, beside a random and a simulator arm."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    from vidpred.planning import defaults as d

    p = sub.add_parser(
        "plan",
        help="visual MPC: push an object to a goal with the run's model (CEM), scored in the simulator",
        description="Run N seeded push-to-goal tasks of the synthetic world closed loop for each arm: 'model' "
        "(CEM scoring the model's predicted frames by the distance of the object's colour centroid to the "
        "goal pixel), 'simulator' (the same CEM with the true simulator as its model: an upper bound) and "
        "'random' (actions from CEM's initial distribution). Writes per arm the success rate (object within "
        "4 px of the goal at the end), the mean final distance and the planning time per step "
        "(docs/planning.md). Deterministic by --seed, timings aside. The run must be action-conditioned "
        "with model.condition=causal. Finished episodes are kept beside the JSON (OUT.episodes.jsonl) until "
        "it is written, so a stopped call resumes when run again with the same settings.",
    )
    p.add_argument("run", type=Path, help="run folder (best.pt, else last.pt) or a checkpoint file")
    p.add_argument("--episodes", type=int, default=d.EPISODES, help="tasks per arm (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tasks and the planners (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: RUN/plan.json)")
    p.add_argument("--steps", type=int, default=d.STEPS,
                   help="actions executed per episode (default: %(default)s)")
    p.add_argument("--samples", type=int, default=d.SAMPLES,
                   help="CEM action sequences per iteration, >= 2 (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=d.ITERATIONS,
                   help="CEM iterations per plan (default: %(default)s)")
    p.add_argument("--elite-fraction", type=float, default=d.ELITE_FRACTION,
                   help="share of the samples kept as elites, at least 2 (default: %(default)s)")
    p.add_argument("--horizon", type=int, default=d.HORIZON,
                   help="planned steps (default: %(default)s)")
    p.add_argument("--replan-every", type=int, default=d.REPLAN_EVERY,
                   help="steps of each plan executed before replanning, <= --horizon (default: %(default)s)")
    p.add_argument("--still", action=argparse.BooleanOptionalAction, default=d.STILL,
                   help="score the zero-motion sequence (the arm stays) in every CEM iteration (default: %(default)s)")
    p.add_argument("--max-step", type=float, default=d.MAX_STEP_PX, metavar="PX",
                   help="largest arm move per step, px, > 0 and <= 3 (default: %(default)s)")
    p.add_argument("--move-cost", type=float, default=d.MOVE_COST,
                   help="cost per px of the arm's planned travel, added to the object's distance in px "
                   "(default: %(default)s)")
    p.add_argument("--execute", default=d.EXECUTES[0], metavar="|".join(d.EXECUTES),
                   help="the plan executed: the lowest-cost sequence scored (best) or the mean of CEM's last "
                   "elites (mean) (default: %(default)s)")
    p.add_argument("--model-samples", type=int, default=d.MODEL_SAMPLES,
                   help="prior samples per action sequence for the model arm, cost averaged (default: %(default)s)")
    p.add_argument("--cost", default=d.COSTS[0], metavar="|".join(d.COSTS),
                   help="how the model arm reads the object's position in its predictions: followed through the "
                   "horizon's frames (tracked) or from the last frame alone (final) (default: %(default)s)")
    p.add_argument("--arms", nargs="+", default=list(d.ARMS), metavar="ARM",
                   help=f"arms to run, some of {' '.join(d.ARMS)} (default: all)")
    p.add_argument("--gif", type=Path, default=None, metavar="DIR",
                   help="write GIFs of the model arm's episodes here: what happened beside what the model "
                   "imagined, and the first plan beside the simulator running it")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="(default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from vidpred.data.synth import WORLD
    from vidpred.planning.cem import CEMConfig
    from vidpred.planning.mpc import (check_arms, check_budget, episode_log_path, format_summary, plan_run,
                                      write_json)

    cfg = CEMConfig(samples=args.samples, iterations=args.iterations, elite_fraction=args.elite_fraction,
                    horizon=args.horizon, replan_every=args.replan_every, still=args.still,
                    move_cost=args.move_cost, execute=args.execute, action_limit=args.max_step / WORLD)
    check_budget(args.episodes, args.steps, args.seed)
    arms = check_arms(args.arms)
    run_dir = args.run.parent if args.run.is_file() else args.run
    out = args.out or run_dir / "plan.json"
    log = episode_log_path(out)
    try:
        result = plan_run(args.run, episodes=args.episodes, seed=args.seed, cfg=cfg, steps=args.steps, arms=arms,
                          model_samples=args.model_samples, device=args.device, gif_dir=args.gif, cost=args.cost,
                          progress=False if args.no_progress else None, log=log)
    except KeyboardInterrupt:
        if log.is_file() and len(log.read_bytes().splitlines()) > 1:
            print(f"finished episodes are kept in {log}: the same command resumes from them", file=sys.stderr)
        raise
    path = write_json(result, out)
    log.unlink(missing_ok=True)
    print(format_summary(result))
    print(f"wrote {path}")
    if args.gif is not None and "model" in arms:
        print(f"GIFs in {args.gif}")
    return 0
