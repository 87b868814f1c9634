"""Does the model keep a pushed object moving once the arm stops? (synthetic world)

Objects slide with a hidden friction (``synth.FRICTION_RANGE``, log-uniform): a pushed
low-friction object glides on after the arm stops, up to ~20 px, a high-friction one stops
at once. For each of the first ``--tasks`` tasks of ``vidpred plan`` (seed ``--seed``) the arm
drives straight at the task's object at ``--speed`` px per step until the object moved
``--moving`` px or more in one step (at most 12 steps; a task whose object never moves is
left out), then stops: the simulator gives how far the object goes over the next 10
zero-motion steps, the model (``--samples`` prior samples, the last two frames as context;
with ``--imagine-push`` the two frames before the push, the model imagining the push's steps
too, as it does for a planner) how far it predicts it (``--one-step``: also the sum of its
one-step predictions, each still step predicted from the true frames before it with the
posterior's latent, as in training), read as the planner reads it (the tracked colour centroid,
``vidpred.planning.cost.colour_track``). Printed per task and by friction (the hidden scale
below / above ``--low``): the mean true and predicted travel. ``--picture PNG``: the task
whose object went farthest, as a strip (the two context frames, then the 10 still steps; top
row the simulator, below it the model's samples; with ``--imagine-push`` the samples' context
frames are the last two of the push they imagined).

How often the model could have seen it: ``--data N`` counts, over the first N training
sequences of the synthetic world (seed ``--data-seed``, hidden causes on, the scripted arm with
``--data-release`` of its pushes struck, ``vidpred data synth --release``),
the object motion (steps of 0.5 px or more) made while the arm's disc is more than
``RELEASED_GAP_PX`` from the object's circumcircle, released; ``--plan FILE.json`` the same
over an arm's episodes of a ``vidpred plan`` result (``--plan-arm``, default ``model``; its
actions replayed).

    .venv/bin/python benchmarks/glide.py RUN --tasks 50 --picture glide.png
    .venv/bin/python benchmarks/glide.py RUN --tasks 0 --data 60 --plan RUN/plan.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vidpred.data.synth import WORLD
from vidpred.planning import defaults
from vidpred.planning import env as env_mod
from vidpred.planning.cem import full_actions
from vidpred.planning.cost import ModelPredictor, colour_centroid, colour_track, frame_to_tensor
from vidpred.training.checkpoint import load_model

MAX_PUSH_STEPS = 12
HORIZON = 10
MOVING_PX = 0.5  # an object step that counts as motion
RELEASED_GAP_PX = 1.5  # the arm's disc this far from an object's circumcircle: not touching it


def released_motion(episode, actions) -> tuple[float, float]:
    """(px of object motion, px of it made while released) as ``episode`` (a ``synth.Episode``) runs
    ``actions`` (dataset units, 4 each; None: the episode's scripted arm, ``synth.SEQ_LEN`` steps).
    Motion is the area centroid's (what the camera sees); the gap is the arm's disc to the circle
    around the object's body."""
    from vidpred.data.synth import EFF_RADIUS, SEQ_LEN

    world = episode.world
    moving = released = 0.0
    before = env_mod.object_centres(world)
    for t in range(SEQ_LEN if actions is None else len(actions)):
        episode.step(episode.scripted_action() if actions is None else np.asarray(actions[t], dtype=np.float64))
        after, arm = env_mod.object_centres(world), np.array(world.eff.position)
        for k, obj in enumerate(world.objects):
            step = float(np.linalg.norm(after[k] - before[k]))
            if step >= MOVING_PX:
                moving += step
                if np.linalg.norm(np.array(obj["body"].position) - arm) - obj["radius"] - EFF_RADIUS > RELEASED_GAP_PX:
                    released += step
        before = after
    return moving, released


def released_line(what: str, shares: list[tuple[float, float]]) -> str:
    moving, released = np.sum(shares, axis=0)
    share = released / max(moving, 1e-9)
    return f"{what}: {moving:.0f} px of object motion, {released:.0f} px ({share:.0%}) of it released"


def push_until_moving(env: env_mod.PushEnv, speed_px: float, moving_px: float) -> bool:
    """Drive the arm straight at the task's object, ``speed_px`` per step, until the object moved
    ``moving_px`` or more in one step (True) or ``MAX_PUSH_STEPS`` passed (False)."""
    for _ in range(MAX_PUSH_STEPS):
        before = env.object_position()
        towards = before - env.effector_position()[:2] * WORLD
        step = towards / max(float(np.linalg.norm(towards)), 1e-9) * speed_px / WORLD
        env.step(np.array([step[0], step[1], 0.0, env.gripper]))
        if np.linalg.norm(env.object_position() - before) >= moving_px:
            return True
    return False


def still_steps(env: env_mod.PushEnv, steps: int, render: bool = False):
    """A fork of the env after ``steps`` zero-motion steps, and its frames (``render``) or []."""
    sim, frames = env.fork(env.snapshot()), []
    for _ in range(steps):
        sim.step(env_mod.zero_action(env.gripper))
        if render:
            frames.append(sim.render())
    return sim, frames


def true_glide(env: env_mod.PushEnv, steps: int = HORIZON) -> float:
    """px the task's object travels over ``steps`` zero-motion steps from the env's state (a fork)."""
    sim, _ = still_steps(env, steps)
    return float(np.linalg.norm(env_mod.object_centre(sim.world, env.task.object) - env.object_position()))


def predicted_glide(model, env: env_mod.PushEnv, samples: int, seed: int,
                    imagine_push: bool = False) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None]:
    """(samples,) px the model moves the object over ``HORIZON`` zero-motion steps (tracked centroid),
    the predicted frames of those steps (samples, HORIZON, 3, h, w) and the frames before them that
    were imagined (None when all were seen). The model's context is the env's last frames (the push
    seen), or with ``imagine_push`` the frames before the push: the model imagines the push's steps
    (the env's executed actions) too, as a planner's model does; the frames before the still steps
    are then its own (samples, n_past, 3, h, w)."""
    predictor = ModelPredictor(model, env.task, env.n_past, samples, torch.Generator().manual_seed(seed))
    still = full_actions(np.zeros((1, HORIZON, 2)), (0.0, env.gripper))
    if imagine_push:
        predictor.bind(env_mod.PushEnv(env.task, env.n_past))  # the task's start: before the push
        push = np.stack(env.actions[env.n_past:])[None]  # (1, k, 4)
        future = predictor.imagine(np.concatenate([push, still], 1))[0]  # (S, k + H, 3, h, w)
        start = colour_track(future[:, :push.shape[1]], predictor.colour, predictor.prior_xy)  # where the push left it
        seen = predictor.frames[None].expand(samples, *predictor.frames.shape).cpu()
        context = torch.cat([seen, future[:, :push.shape[1]]], 1)[:, -env.n_past:]
        future = future[:, push.shape[1]:]
    else:
        predictor.bind(env)
        future = predictor.imagine(still)[0]  # (S, H, 3, h, w)
        start = torch.tensor(predictor.prior_xy, dtype=torch.float32).expand(samples, 2)
        context = None
    xy = colour_track(future, predictor.colour, start)  # each sample from its own start
    return (xy - start).norm(dim=-1).numpy(), future, context


@torch.no_grad()
def one_step_glide(model, env: env_mod.PushEnv, seed: int) -> tuple[float, float]:
    """(true, predicted) px: over ``HORIZON`` zero-motion steps from the env's state, the sum of the
    object's true moves per step, and of the model's one-step predictions of them: each step
    predicted from the true frames before it, with the posterior's latent (teacher forcing, as in
    training), read as colour centroids against the true previous frame's (with the planner's
    pseudo-pixel there, so a prediction that loses the object has not moved it)."""
    from vidpred.models.svg import rollout

    _, truth = still_steps(env, HORIZON, render=True)
    predictor = ModelPredictor(model, env.task, env.n_past, 1)
    predictor.bind(env)
    conds = predictor.conditions(full_actions(np.zeros((1, HORIZON, 2)), (0.0, env.gripper)))
    frames = torch.stack([frame_to_tensor(f) for f in list(env.frames[-env.n_past:]) + truth])[None]
    out = rollout(model, frames, conds, env.n_past, use_posterior=True, teacher_forcing=True,
                  generator=torch.Generator().manual_seed(seed))
    P = env.n_past
    # frames P - 1 .. P + H - 1 followed as the planner's cost follows them (an object a frame loses
    # stays where it was)
    true = colour_track(frames[0, P - 1:], predictor.colour, predictor.prior_xy, path=True)
    pred = colour_centroid(out.pred[0, P - 1:].float().clamp(0, 1), predictor.colour, true[:-1])  # P .. P + H - 1
    return float((true[1:] - true[:-1]).norm(dim=-1).sum()), float((pred - true[:-1]).norm(dim=-1).sum())


def write_picture(env: env_mod.PushEnv, future: torch.Tensor, path: Path, scale: int = 2,
                  imagined: torch.Tensor | None = None) -> None:
    """The strip of ``--picture``: context frames then the still steps, the simulator on top; the
    samples' context frames are the env's, or their own ``imagined`` ones (samples, n_past, 3, h, w)."""
    from PIL import Image

    _, truth = still_steps(env, future.shape[1], render=True)
    context = list(env.frames[-env.n_past:])
    rows = [np.concatenate(context + truth, 1)]
    frames = future if imagined is None else torch.cat([imagined, future], 1)
    for sample in (frames.permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8):
        rows.append(np.concatenate((context if imagined is None else []) + list(sample), 1))
    img = Image.fromarray(np.concatenate(rows, 0))
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="run folder or checkpoint (action-conditioned, model.condition=causal)")
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="seed of the tasks (default: %(default)s)")
    ap.add_argument("--samples", type=int, default=4, help="prior samples (default: %(default)s)")
    ap.add_argument("--speed", type=float, default=2.5, help="px per push step (default: %(default)s)")
    ap.add_argument("--moving", type=float, default=1.0,
                    help="px per step that counts as moving (default: %(default)s)")
    ap.add_argument("--low", type=float, default=env_mod.SLIPPERY_FRICTION,
                    help="friction scale below which an object is slippery (default: %(default)s)")
    ap.add_argument("--data", type=int, default=0, metavar="N",
                    help="also count released motion in the first N training sequences (default: %(default)s)")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of those sequences (default: %(default)s)")
    ap.add_argument("--data-release", type=float, default=0.0,
                    help="their scripted arm's share of strikes (vidpred data synth --release; default: %(default)s)")
    ap.add_argument("--plan", type=Path, default=None, metavar="JSON",
                    help="also count released motion in this vidpred plan result's episodes of --plan-arm")
    ap.add_argument("--plan-arm", default="model", choices=defaults.ARMS,
                    help="(default: %(default)s)")
    ap.add_argument("--imagine-push", action="store_true",
                    help="the model imagines the push too, from the frames before it (as a planner's model "
                         "does); default: it sees the push's last frames")
    ap.add_argument("--one-step", action="store_true",
                    help="also the model's one-step predictions of the still steps, each from the true frames "
                         "before it with the posterior's latent (teacher forcing)")
    ap.add_argument("--picture", type=Path, default=None, metavar="PNG",
                    help="write the farthest-gliding task as a strip: the simulator on top, the model's samples below")
    args = ap.parse_args()
    for flag, value, low in (("--tasks", args.tasks, 0), ("--samples", args.samples, 1), ("--data", args.data, 0)):
        if value < low:
            raise SystemExit(f"{flag} must be >= {low}, got {value}")
    for flag, value in (("--speed", args.speed), ("--moving", args.moving), ("--low", args.low)):
        if not value > 0:
            raise SystemExit(f"{flag} must be > 0, got {value}")
    from vidpred.data.synth import check_release
    from vidpred.errors import ConfigError

    try:
        check_release(args.data_release)
    except ConfigError as err:
        raise SystemExit(f"--data-release: {err}") from None
    if args.speed > env_mod.MAX_STEP_PX:
        raise SystemExit(f"--speed must be <= {env_mod.MAX_STEP_PX:g} px (the most the training data's arm moves "
                         f"per step), got {args.speed}")
    if args.data:
        from vidpred.data.synth import Episode

        shares = [released_motion(Episode(args.data_seed, "train", i, hidden=True, release=args.data_release), None)
                  for i in range(args.data)]
        print(released_line(f"training data (seed {args.data_seed}, release {args.data_release:g}, "
                            f"{args.data} sequences)", shares))
    if args.plan is not None:
        import json

        try:
            plan = json.loads(args.plan.read_text())
            tasks = {t.index: t for t in env_mod.find_tasks(plan["seed"], plan["episodes"])}
            shares = [released_motion(env_mod.PushEnv(tasks[r["task"]], plan["n_past"]).episode, r["actions"])
                      for r in plan[args.plan_arm]["episodes"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SystemExit(f"{args.plan}: not a readable vidpred plan result with a {args.plan_arm} arm "
                             f"({err!r})") from None
        print(released_line(f"{args.plan} ({args.plan_arm} arm, {len(shares)} episodes)", shares))
    if not args.tasks:
        return
    model, cfg, _ = load_model(args.run)
    rows, farthest = [], None
    for task in env_mod.find_tasks(args.seed, args.tasks):
        env = env_mod.PushEnv(task, cfg.train.n_past)
        if not push_until_moving(env, args.speed, args.moving):
            continue
        friction = env.object_friction()
        truth = true_glide(env)
        pred, future, imagined = predicted_glide(model, env, args.samples, args.seed * 100_003 + task.index,
                                                 args.imagine_push)
        one = one_step_glide(model, env, task.index) if args.one_step else (np.nan, np.nan)
        rows.append((friction, truth, float(pred.mean())) + one)
        if farthest is None or truth > farthest[0]:
            farthest = (truth, env, future, imagined)
        print(f"task {task.index:4d} friction {friction:5.2f} after {env.steps_taken:2d} push steps: the object goes "
              f"{truth:5.1f} px in {HORIZON} still steps, the model {pred.mean():4.1f} px "
              f"(samples {', '.join(f'{v:.1f}' for v in pred)})"
              + (f"; one step at a time {one[0]:4.1f} px, the model {one[1]:4.1f} px" if args.one_step else ""))
    if not rows:
        raise SystemExit("no task's object moved under the push")
    r = np.array(rows)
    print(f"{args.run}: {len(r)} of {args.tasks} tasks' objects moved under a {args.speed:g} px/step push")
    slippery = r[:, 0] < args.low
    for name, sel in ((f"friction < {args.low:g}", slippery), (f"friction >= {args.low:g}", ~slippery)):
        if sel.any():
            print(f"  {name:16s} {int(sel.sum()):3d} objects: true travel {r[sel, 1].mean():5.2f} px, "
                  f"model {r[sel, 2].mean():5.2f} px"
                  + (f"; one step at a time: true {r[sel, 3].mean():5.2f} px, model {r[sel, 4].mean():5.2f} px"
                     if args.one_step else ""))
    if args.picture is not None:
        _, env, future, imagined = farthest
        write_picture(env, future, args.picture, imagined=imagined)
        print(f"wrote {args.picture}: task {env.task.index}, the simulator on top, {args.samples} model samples below")


if __name__ == "__main__":
    main()
