"""Closed-loop planning episodes for each arm, and the ``vidpred plan`` result.

Arms (each runs the same seeded tasks, ``steps`` executed steps per episode):

* ``model``: CEM with the video model's predictions scored by the colour centroid;
* ``simulator``: the same CEM with the true simulator as its model (an upper bound:
  what the planner reaches with a perfect model);
* ``random``: one action sequence from CEM's initial distribution.

Every random draw is keyed by ``(seed, task index, arm)``: the same seed gives the same
JSON numbers (timings aside), and arms do not change each other's draws. The result
(``FORMAT``) holds, per arm, ``success_rate``, ``final_distance_px`` (mean),
``seconds_per_step`` (planning wall time per executed step), ``reached_rate`` (the share of
episodes whose object was within the success radius after some executed step: above
``success_rate`` where plans brought the object to the goal and then moved it off) and
per-episode records (``distances_px``: the object's true distance to the goal before the
first planned step and after each); beside them the tasks, the planner settings and the
success radius.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vidpred.errors import ConfigError, DataError
from vidpred.planning.cem import CEM, CEMConfig, random_actions
from vidpred.planning.cost import ModelPredictor, SimulatorPredictor, check_cost, check_model, frame_to_tensor
from vidpred.planning.defaults import ARMS, COSTS, EPISODES, MODEL_SAMPLES, STEPS
from vidpred.planning.env import (GOAL_CONE_DEG, GOAL_DISTANCE_PX, MAX_GAP_PX, MIN_CONTRAST, SUCCESS_RADIUS_PX,
                                  TASK_SPLIT, PushEnv, Task, find_tasks)
from vidpred.training.checkpoint import complete_lines, rewrite_lines, write_atomic

FORMAT = "vidpred-plan-1"
ARM_KEYS = {"model": 1, "random": 2, "simulator": 3}
READING = {"tracked": "followed through the predicted frames", "final": "in the last predicted frame"}  # --cost
COST = {cost: f"distance in px from the object to the goal after the last step of the horizon: its colour centroid "
              f"{reading} (model), its true area centroid (simulator); plus planner.move_cost per px of the arm's "
              f"planned travel" for cost, reading in READING.items()}


def arm_rng(seed: int, index: int, arm: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), ARM_KEYS[arm], 0xC3E])


def torch_generator(seed: int, index: int, key: int) -> torch.Generator:
    k = int(np.random.default_rng([int(seed), int(index), key, 0x70C]).integers(2**62))
    return torch.Generator().manual_seed(k)


def make_predictor(arm: str, task: Task, seed: int, n_past: int, model=None, model_samples: int = 1,
                   cost: str = COSTS[0]):
    """The ``predict`` of a planning arm for one task: the model's (its latent noise keyed by
    ``(seed, task index)``) or the simulator's."""
    if arm == "model":
        return ModelPredictor(model, task, n_past, model_samples, torch_generator(seed, task.index, 1), cost=cost)
    return SimulatorPredictor(task)


def run_episode(task: Task, arm: str, cfg: CEMConfig, steps: int, seed: int, n_past: int,
                model=None, model_samples: int = 1, imagine: bool = False, cost: str = COSTS[0],
                predictor=None) -> dict[str, Any]:
    """One closed-loop episode. ``predictor``: the planner's ``predict`` with ``bind(env)`` (default: the
    arm's own, :func:`make_predictor`). Returns its record; with ``imagine`` (model arm) also the
    pictures: ``frames`` (all executed), ``imagined`` (per executed step, what the plan in
    force predicted for it) and ``first_plan`` (the first plan's imagined frames and the
    simulator's frames under that plan, executed open loop)."""
    env = PushEnv(task, n_past)
    rng = arm_rng(seed, task.index, arm)
    fixed = (0.0, env.gripper)
    planning = 0.0
    plans = 0
    pictures: dict[str, Any] = {}
    distances = [env.distance()]
    if arm == "random":
        started = time.perf_counter()
        actions = random_actions(rng, steps, cfg, fixed)
        planning += time.perf_counter() - started
        for a in actions:
            env.step(a)
            distances.append(env.distance())
    else:
        if predictor is None:
            predictor = make_predictor(arm, task, seed, n_past, model, model_samples, cost)
        if arm == "model":
            gif_gen = torch_generator(seed, task.index, 2)  # pictures draw their own noise: --gif changes no result
        cem = CEM(cfg, rng)
        imagined = []
        while env.steps_taken < steps:
            started = time.perf_counter()
            predictor.bind(env)
            plan = cem.plan(predictor, fixed)
            planning += time.perf_counter() - started
            plans += 1
            k = min(cfg.replan_every, steps - env.steps_taken)
            if imagine and arm == "model":
                future = predictor.imagine(plan.actions[None], generator=gif_gen)[0, 0]  # (H, 3, h, w)
                imagined.extend(future[:k])
                if "first_plan" not in pictures:
                    sim = env.fork(env.snapshot())
                    truth = []
                    for a in plan.actions:
                        sim.step(a)
                        truth.append(frame_to_tensor(sim.render()))
                    past = [frame_to_tensor(f) for f in env.frames[-n_past:]]
                    pictures["first_plan"] = (torch.stack(past + truth), future)
            for a in plan.actions[:k]:
                env.step(a)
                distances.append(env.distance())
            cem.advance(k)
        if imagined:
            pictures["imagined"] = torch.stack(imagined)
    if pictures:
        pictures["frames"] = torch.stack([frame_to_tensor(f) for f in env.frames])
    final = env.distance()
    record = dict(task=task.index, object=task.object, start_distance_px=round(float(np.linalg.norm(
        np.array(task.start) - env.goal)), 4), final_distance_px=round(final, 4),
        success=bool(final <= SUCCESS_RADIUS_PX), final_position=[round(float(v), 4) for v in env.object_position()],
        steps=env.steps_taken, plans=plans, planning_seconds=round(planning, 4),
        seconds_per_step=round(planning / max(env.steps_taken, 1), 6),
        distances_px=[round(float(d), 4) for d in distances],
        actions=[[round(float(v), 6) for v in a] for a in env.actions[n_past:]])
    if pictures:
        record["pictures"] = pictures
    return record


def summarise(records: list[dict]) -> dict[str, Any]:
    final = np.array([r["final_distance_px"] for r in records])
    start = np.array([r["start_distance_px"] for r in records])
    seconds = sum(r["planning_seconds"] for r in records)
    steps = sum(r["steps"] for r in records)
    # after some executed step (distances_px[0] is before the first); a record without distances_px
    # (written by an older vidpred) leaves reached_rate out
    reached = [min(r["distances_px"][1:]) <= SUCCESS_RADIUS_PX
               for r in records if len(r.get("distances_px", ())) > 1]
    extra = dict(reached_rate=round(float(np.mean(reached)), 6)) if len(reached) == len(records) else {}
    return dict(success_rate=round(float(np.mean([r["success"] for r in records])), 6), **extra,
                final_distance_px=round(float(final.mean()), 4),
                final_distance_median_px=round(float(np.median(final)), 4),
                improvement_px=round(float((start - final).mean()), 4),
                seconds_per_step=round(seconds / max(steps, 1), 6),
                episodes=[{k: v for k, v in r.items() if k != "pictures"} for r in records])


def check_budget(episodes: int, steps: int, seed: int = 0) -> None:
    for flag, value, low in (("--episodes", episodes, 1), ("--steps", steps, 1), ("--seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{flag} must be an integer >= {low}, got {value!r}")


def check_arms(arms) -> tuple[str, ...]:
    arms = tuple(dict.fromkeys(arms))  # keep the order, drop repeats
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise ConfigError(f"--arms must be some of {', '.join(ARMS)}, got {', '.join(bad) or 'none'}")
    return arms


def episode_log_path(out: str | Path) -> Path:
    """Where ``vidpred plan`` keeps the finished episodes of the call that writes ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".episodes.jsonl")


LOG_FORMAT = "vidpred-plan-episodes-1"


class EpisodeLog:
    """The finished episodes of a ``vidpred plan`` call, one JSON line each, so that a call
    that was stopped resumes where it stopped: a later call with the same settings (the
    checkpoint's path and SHA-256, seed, steps, planner, cost, task rules, success radius,
    device, whether GIFs are written) re-runs none of them. The first line names those
    settings; a log written with others, or a file that is not such a log, is started over.
    Every line is flushed to disk as its episode ends; a last line cut short by a kill is
    dropped (the file is rewritten without it) when the log is opened."""

    def __init__(self, path: str | Path | None, settings: dict) -> None:
        self.path, self.done = (Path(path) if path is not None else None), {}
        if self.path is None:
            return
        header = {"log": LOG_FORMAT, "settings": settings}
        try:
            lines = complete_lines(self.path) if self.path.exists() else []
            if lines and json.loads(lines[0]) == header:
                rows = [json.loads(line) for line in lines[1:]]
                self.done = {(r["arm"], r["episode"], r["task"]): dict(r["record"]) for r in rows}
            elif lines:
                print(f"{self.path}: not an episode log of a call with these settings; starting over", file=sys.stderr)
                lines = []
        except OSError as err:
            raise DataError(f"{self.path}: cannot read the episode log ({err.strerror or err})") from None
        except (ValueError, KeyError, TypeError):  # not text, not JSON, not our rows
            print(f"{self.path}: not a readable episode log; starting over", file=sys.stderr)
            lines, self.done = [], {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            rewrite_lines(self.path, lines or [json.dumps(header)])  # without a line cut short by a kill
        except OSError as err:
            raise DataError(f"{self.path}: cannot write the episode log ({err.strerror or err})") from None

    def get(self, arm: str, episode: int, task: Task) -> dict | None:
        return self.done.get((arm, episode, task.index))

    def add(self, arm: str, episode: int, task: Task, record: dict) -> None:
        if self.path is None:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"arm": arm, "episode": episode, "task": task.index, "record": record}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_run(run: str | Path, episodes: int = EPISODES, seed: int = 0, cfg: CEMConfig | None = None,
             steps: int = STEPS, arms=ARMS, model_samples: int = MODEL_SAMPLES, device: str = "auto",
             gif_dir: str | Path | None = None, progress: bool | None = None,
             log: str | Path | None = None, cost: str = COSTS[0]) -> dict[str, Any]:
    """Run ``episodes`` seeded tasks closed loop for each arm; returns the result dict
    (GIFs of the model arm's episodes are written to ``gif_dir``). ``log``: a JSON-lines
    file of finished episodes (:class:`EpisodeLog`): those already there are not run again
    (nor their GIFs written again)."""
    from vidpred.training.checkpoint import load_model
    from vidpred.training.trainer import resolve_device

    cfg = cfg or CEMConfig()
    check_budget(episodes, steps, seed)
    arms = check_arms(arms)
    if model_samples < 1:
        raise ConfigError(f"--model-samples must be >= 1, got {model_samples}")
    check_cost(cost)
    model, run_cfg, ckpt = load_model(Path(run), device=resolve_device(device))
    check_model(run_cfg.model, str(run))
    n_past = run_cfg.train.n_past
    tasks = find_tasks(seed, episodes)
    result: dict[str, Any] = {
        "format": FORMAT, "run": str(run), "checkpoint": str(ckpt), "episodes": episodes, "seed": seed,
        "steps": steps, "n_past": n_past, "success_radius_px": SUCCESS_RADIUS_PX, "arms": list(arms),
        "planner": {**cfg.as_dict(), "model_samples": model_samples, "cost": cost},
        "cost": COST[cost],
        "task_rules": dict(split=TASK_SPLIT, goal_distance_px=list(GOAL_DISTANCE_PX), goal_cone_deg=GOAL_CONE_DEG,
                           max_gap_px=MAX_GAP_PX, min_contrast=MIN_CONTRAST),
        "tasks": [t.as_dict() for t in tasks],
        "torch_threads": torch.get_num_threads(),
    }
    settings = {}
    if log is not None:  # what the numbers depend on (episodes and arms are per line)
        keys = ("format", "checkpoint", "seed", "steps", "planner", "cost", "task_rules", "success_radius_px")
        settings = {k: result[k] for k in keys} | {
            "checkpoint_sha256": file_sha256(ckpt), "device": str(next(model.parameters()).device),
            "gif": gif_dir is not None}
    episode_log = EpisodeLog(log, settings)
    wanted = {(arm, i, t.index) for arm in arms for i, t in enumerate(tasks)}
    resumed = len(wanted & episode_log.done.keys())
    if resumed:
        print(f"resuming from {episode_log.path}: {resumed} of {len(wanted)} episodes already done", file=sys.stderr)
    bar = tqdm(total=episodes * len(arms), desc="plan", unit="episode", file=sys.stderr, dynamic_ncols=True,
               disable=None if progress is None else not progress)
    for arm in arms:
        records = []
        for i, task in enumerate(tasks):
            bar.set_postfix_str(arm)
            rec = episode_log.get(arm, i, task)
            if rec is None:
                rec = run_episode(task, arm, cfg, steps, seed, n_past, model=model, model_samples=model_samples,
                                  imagine=gif_dir is not None and arm == "model", cost=cost)
                if "pictures" in rec:
                    write_gifs(rec.pop("pictures"), Path(gif_dir), i, task, n_past)
                episode_log.add(arm, i, task, rec)
            records.append(rec)
            bar.update()
        result[arm] = summarise(records)
    bar.close()
    return result


def _mark_goal(frames: torch.Tensor, goal) -> torch.Tensor:
    """frames (T, 3, H, W): a copy with the goal pixel and its 4 neighbours drawn in white."""
    out = frames.clone()
    H, W = frames.shape[-2:]
    gx, gy = int(goal[0]), int(goal[1])  # the pixel the goal lies in
    for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
        x, y = gx + dx, gy + dy
        if 0 <= x < W and 0 <= y < H:
            out[:, :, y, x] = 1.0
    return out


def write_gifs(pictures: dict, out: Path, episode: int, task: Task, n_past: int, scale: int = 3) -> list[Path]:
    """Two GIFs per model episode (goal marked in white): the episode as it happened beside
    what the model imagined for each executed step (from the plan in force), and the first
    plan's whole imagined horizon beside the simulator running that plan open loop."""
    from vidpred.reporting.media import comparison_frames, save_gif

    out.mkdir(parents=True, exist_ok=True)
    stem = f"episode_{episode:03d}_task{task.index}"
    paths = []
    truth = _mark_goal(pictures["frames"], task.goal)
    jobs = [(f"{stem}.gif", truth, _mark_goal(pictures["imagined"], task.goal), ("what happened", "model imagined"))]
    if "first_plan" in pictures:
        sim, imagined = pictures["first_plan"]
        jobs.append((f"{stem}_first_plan.gif", _mark_goal(sim, task.goal), _mark_goal(imagined, task.goal),
                     ("simulator, first plan", "model imagined")))
    for name, left, right, titles in jobs:
        frames = comparison_frames(left, right, n_past, scale=scale, titles=titles)
        paths.append(write_atomic(out / name, lambda f, frames=frames: save_gif(frames, f)))
    return paths


def write_json(result: dict, path: str | Path) -> Path:
    """Write atomically (temporary file in the same folder, then rename): never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()))


def format_summary(result: dict) -> str:
    lines = [f"{result['episodes']} tasks (seed {result['seed']}), {result['steps']} steps each, success within "
             f"{result['success_radius_px']:g} px of the goal at the end (reached: after some step)",
             f"{'arm':10s}{'success':>9s}{'reached':>9s}{'final px':>10s}{'s/step':>9s}"]
    for arm in result["arms"]:
        r = result[arm]
        reached = f"{r['reached_rate']:9.0%}" if "reached_rate" in r else f"{'-':>9s}"
        lines.append(f"{arm:10s}{r['success_rate']:9.0%}{reached}{r['final_distance_px']:10.2f}"
                     f"{r['seconds_per_step']:9.3f}")
    return "\n".join(lines)
