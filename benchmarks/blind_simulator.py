"""The planner with a simulator that is blind to gliding: what a model that freezes released objects costs.

``vidpred plan``'s simulator arm plans with the true world, hidden friction included. Here the
planner's world gives every pushable object the same friction scale ``--friction`` (3, the top
of ``synth.FRICTION_RANGE``: an object stops as soon as the arm leaves it, which is what the
demo's model predicts, benchmarks/glide.py), while the episodes run in the true world: a
perfect model but for gliding. Closed loop on the first ``--tasks`` tasks of seed ``--seed``
with the default planner but ``--max-step`` and ``--move-cost``; prints each episode and the
success rate, reached rate, mean final distance and the successes on slippery objects (hidden
friction below ``env.SLIPPERY_FRICTION``) and on the others (the simulator arm's JSON summary,
to ``--out`` if given).

    .venv/bin/python benchmarks/blind_simulator.py --tasks 50 --max-step 3
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import pymunk

from vidpred.data import synth
from vidpred.errors import ConfigError
from vidpred.planning import defaults
from vidpred.planning import env as env_mod
from vidpred.planning.cem import CEMConfig
from vidpred.planning.cost import SimulatorPredictor
from vidpred.planning.mpc import run_episode, summarise


class BlindSimulator(SimulatorPredictor):
    """The simulator arm's ``predict`` in a world where every object the arm can push has the
    friction scale ``friction`` (heavy objects keep theirs)."""

    def __init__(self, task, friction: float):
        super().__init__(task)
        self.friction = float(friction)

    def bind(self, env) -> None:
        self.env = env
        world = pickle.loads(env.snapshot())  # the planner's copy; the env's own world keeps its friction
        objects = {id(o["body"]): o for o in world.objects}
        for joint in world.space.constraints:  # the table's friction: the zero-bias joints to the static body
            o = objects.get(id(joint.b))
            if o is None or o["friction"] >= synth.HEAVY_MIN_FRICTION:
                continue
            force, torque = synth.table_friction(self.friction, o["mass"], o["radius"])
            if isinstance(joint, pymunk.PivotJoint):
                joint.max_force = force
            elif isinstance(joint, pymunk.GearJoint):
                joint.max_force = torque
        self.snap = pickle.dumps(world)


def run(tasks: int, seed: int, friction: float, cfg: CEMConfig, steps: int = defaults.STEPS,
        n_past: int = env_mod.N_PAST, report=print) -> dict:
    """Closed-loop episodes planned with :class:`BlindSimulator`; the simulator arm's summary, with
    ``slippery`` and ``others``: [successes, tasks] of objects below / above ``env.SLIPPERY_FRICTION``."""
    records, split = [], {"slippery": [0, 0], "others": [0, 0]}
    for task in env_mod.find_tasks(seed, tasks):
        records.append(run_episode(task, "simulator", cfg, steps, seed, n_past,
                                   predictor=BlindSimulator(task, friction)))
        r, mu = records[-1], env_mod.PushEnv(task, n_past).object_friction()
        group = split["slippery" if mu < env_mod.SLIPPERY_FRICTION else "others"]
        group[0], group[1] = group[0] + int(r["success"]), group[1] + 1
        report(f"task {task.index:4d} (friction {mu:4.2f}): {'success' if r['success'] else 'fail   '} "
               f"final {r['final_distance_px']:5.2f} px")
    return summarise(records) | split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="seed of the tasks (default: %(default)s)")
    ap.add_argument("--friction", type=float, default=synth.FRICTION_RANGE[1],
                    help="the planner's friction scale for every pushable object (default: %(default)s)")
    ap.add_argument("--max-step", type=float, default=defaults.MAX_STEP_PX, help="px (default: %(default)s)")
    ap.add_argument("--move-cost", type=float, default=defaults.MOVE_COST, help="(default: %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="write the summary JSON here")
    args = ap.parse_args()
    for flag, value, low in (("--tasks", args.tasks, 1), ("--seed", args.seed, 0)):
        if value < low:
            raise SystemExit(f"{flag} must be >= {low}, got {value}")
    if not args.friction > 0:
        raise SystemExit(f"--friction must be > 0, got {args.friction}")
    try:
        cfg = CEMConfig(action_limit=args.max_step / synth.WORLD, move_cost=args.move_cost)
    except ConfigError as err:
        raise SystemExit(str(err)) from None
    summary = run(args.tasks, args.seed, args.friction, cfg)
    print(f"blind simulator (friction {args.friction:g}), --max-step {args.max_step:g}, --move-cost "
          f"{args.move_cost:g}: success {summary['success_rate']:.0%}, reached {summary['reached_rate']:.0%}, "
          f"final {summary['final_distance_px']:.2f} px over {args.tasks} tasks; solved "
          f"{'/'.join(map(str, summary['slippery']))} slippery (friction < {env_mod.SLIPPERY_FRICTION:g}), "
          f"{'/'.join(map(str, summary['others']))} others")
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
