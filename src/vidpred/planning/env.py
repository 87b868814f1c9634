"""The planning environment: seeded "push object k to a goal" tasks in the synthetic world.

A task is built from the episode ``Episode(seed, "plan", index, hidden=True)`` of
``vidpred.data.synth``: the split key "plan" is none of the dataset's, so no task
starts like a training, validation or test sequence. Its start (table, objects, arm)
is the episode's; on top of it the task picks

* the object to move: the one nearest to the arm among those the camera can tell
  apart (its fill colour is at least ``MIN_CONTRAST`` away, in RGB in [0, 1], from
  the table, the walls, the shadows, the arm and every other object's fill and outline
  colour) and the arm can push (not one of the world's hidden heavy objects, which the
  effector's force limit barely moves; the agent is not told which those are) and
  whose edge is at most ``MAX_GAP_PX`` from the arm's, so a 10-step horizon reaches it;
* a goal position ``GOAL_DISTANCE_PX`` (8-14 px) from the object's start, away from
  the arm within +-``GOAL_CONE_DEG`` (a push, not a walk around the object), with the
  whole object inside the walls and clear of the other objects.

Indices whose episode has no such object or goal are skipped: :func:`find_tasks`
returns the first ``n`` valid indices from 0, a pure function of the seed.

What the agent is told: the goal as a pixel of the 64x64 frame and the object by its
fill colour (``world.objects[k]["colour"]``; the pixel at a circle's centre is its dark
orientation stripe, so the frame is not read for it). Units: px are the frame's
coordinates, which are the world's (pixel column j covers x in [j, j+1), so a pixel's
centre is j + 0.5); actions and effector positions are in dataset units (table
fractions), as in ``Episode.step`` / ``Episode.position``.

The object's position is the area centroid of its shape (what a colour centroid of the
frame sees; for an irregular polygon it is not the body's origin). Success: that centroid
within ``SUCCESS_RADIUS_PX`` of the goal at the end of the episode.

:class:`PushEnv` runs one task: ``reset()`` executes ``n_past`` zero-motion steps (the
model's context frames), ``step(action)`` one 4-d action. The gripper stays as the
episode set it (``PushEnv.gripper``) and ``dz`` at 0 in every arm: a zero-motion action
is ``(0, 0, 0, gripper)``, not a gripper of 0, which the training data never shows.
Everything is deterministic for a seed: the same task gives identical frames and poses.
"""

from __future__ import annotations

import copy
import math
import pickle
from dataclasses import asdict, dataclass

import numpy as np

from vidpred.data.synth import EFF_MAX_FORCE, EFF_RADIUS, FRICTION_ACCEL, SPLIT_IDS, WALL, WORLD, Episode
from vidpred.errors import ConfigError

TASK_SPLIT = "plan"
N_PAST = 2  # zero-motion steps before the agent acts: the model's two context frames
SUCCESS_RADIUS_PX = 4.0
GOAL_DISTANCE_PX = (8.0, 14.0)
GOAL_CONE_DEG = 40.0  # the goal lies within this angle of the arm -> object direction
GOAL_TRIES = 16
MAX_GAP_PX = 8.0  # largest start gap between the arm's disc and the object's circumcircle
MIN_CONTRAST = 0.3  # RGB distance (in [0, 1]) of the object's colour from every other colour drawn
PUSHABLE_FORCE = 0.5 * EFF_MAX_FORCE  # objects whose table friction exceeds this are not targets
MAX_STEP_PX = 3.0  # the scripted plans move the arm at most ~3 px per step (synth.Planner.speed)
ACTION_LIMIT = MAX_STEP_PX / WORLD  # |(dx, dy)| limit in dataset units
SLIPPERY_FRICTION = 0.25  # hidden friction scale below which a released object glides on far (benchmarks/glide.py)
MAX_SCAN = 10_000  # episode indices tried by find_tasks before giving up
# The arm's colours, as synth.Renderer draws them (link, its highlight, disc, outline, fingers).
ARM_COLOURS = ((72, 74, 80), (112, 114, 120), (128, 130, 138), (52, 52, 58), (60, 60, 66))
TASK_KEY = 0x7A5C  # the task's own random stream (goal direction and distance)


@dataclass(frozen=True)
class Task:
    """One planning task: push ``object`` (told by its ``colour``) from ``start`` to ``goal`` (px)."""

    seed: int
    index: int
    """Episode index in the "plan" split."""
    object: int
    colour: tuple[int, int, int]
    """The object's fill colour, uint8 RGB."""
    start: tuple[float, float]
    goal: tuple[float, float]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["start"] = [round(v, 4) for v in self.start]
        d["goal"] = [round(v, 4) for v in self.goal]
        d["colour"] = list(self.colour)
        d["start_distance_px"] = round(math.dist(self.start, self.goal), 4)
        return d


def object_centre(world, k: int) -> np.ndarray:
    """(2,) the area centroid of object k in px (circle: its centre)."""
    obj = world.objects[k]
    shape = obj["shape"]
    cog = (0.0, 0.0) if obj["kind"] == "circle" else shape.center_of_gravity
    p = obj["body"].local_to_world(cog)
    return np.array([p[0], p[1]])


def object_centres(world) -> np.ndarray:
    """(n_objects, 2) the area centroids of every object in px."""
    return np.array([object_centre(world, k) for k in range(len(world.objects))]).reshape(-1, 2)


def _table_colours(episode: Episode) -> list[np.ndarray]:
    """Colours of the empty scene (table, walls, rim, shadows), RGB in [0, 1]."""
    table = np.median(np.asarray(episode.renderer.background).reshape(-1, 3), axis=0)
    return [table, table * 0.55, table * 0.8, np.array(episode.renderer.shadow, float)]


def _contrast(colour: np.ndarray, others: list[np.ndarray]) -> float:
    return min(float(np.linalg.norm(colour - o)) for o in others) / 255.0


def make_task(seed: int, index: int) -> Task | None:
    """The task of episode ``index`` of the "plan" split, or None when it has no valid one."""
    episode = Episode(seed, TASK_SPLIT, index, hidden=True)
    world = episode.world
    arm = np.array(world.eff.position)
    fixed = _table_colours(episode) + [np.array(c, float) for c in ARM_COLOURS]
    candidates = []
    for k, obj in enumerate(world.objects):
        colour = np.array(obj["colour"], float)
        others = fixed + [np.array(o["colour"], float) * f for j, o in enumerate(world.objects) if j != k
                          for f in (1.0, 0.6)]
        if _contrast(colour, others) < MIN_CONTRAST:
            continue
        if FRICTION_ACCEL * obj["friction"] * obj["mass"] > PUSHABLE_FORCE:
            continue
        gap = float(np.linalg.norm(object_centre(world, k) - arm)) - obj["radius"] - EFF_RADIUS
        if gap <= MAX_GAP_PX:
            candidates.append((gap, k))
    if not candidates:
        return None
    k = min(candidates)[1]
    obj = world.objects[k]
    start = object_centre(world, k)
    rng = np.random.default_rng((int(seed), SPLIT_IDS[TASK_SPLIT], int(index), TASK_KEY))
    away = math.atan2(*(start - arm)[::-1])
    lo, hi = WALL + obj["radius"] + 1.0, WORLD - WALL - obj["radius"] - 1.0
    for _ in range(GOAL_TRIES):
        angle = away + math.radians(rng.uniform(-GOAL_CONE_DEG, GOAL_CONE_DEG))
        goal = start + rng.uniform(*GOAL_DISTANCE_PX) * np.array([math.cos(angle), math.sin(angle)])
        inside = bool(((goal >= lo) & (goal <= hi)).all())
        clear = all(np.linalg.norm(goal - object_centre(world, j)) > obj["radius"] + o["radius"] + 1.0
                    for j, o in enumerate(world.objects) if j != k)
        if inside and clear:
            return Task(int(seed), int(index), k, tuple(int(c) for c in obj["colour"]),
                        (float(start[0]), float(start[1])), (float(goal[0]), float(goal[1])))
    return None


def find_tasks(seed: int, n: int) -> list[Task]:
    """The first ``n`` valid tasks of ``seed`` (episode indices 0, 1, ... without a valid task skipped)."""
    tasks = []
    for index in range(MAX_SCAN):
        if len(tasks) == n:
            return tasks
        task = make_task(seed, index)
        if task is not None:
            tasks.append(task)
    raise ConfigError(f"--episodes {n}: only {len(tasks)} valid tasks among the first {MAX_SCAN} episodes of "
                      f"seed {seed}")


def zero_action(gripper: float) -> np.ndarray:
    return np.array([0.0, 0.0, 0.0, gripper])


class PushEnv:
    """One task, closed loop: observe frames, act, read the true state.

    History (one entry per executed step, the ``n_past`` zero-motion steps first):
    ``frames`` uint8 (64, 64, 3), ``actions`` (4,) as executed (the commanded displacement
    clipped to keep the set-point on the table, as ``Episode.step`` clips it; the dataset
    records commands too) and ``positions`` (3,) the effector after the step: the
    dataset's (action, position) rows of those frames.
    """

    def __init__(self, task: Task, n_past: int = N_PAST):
        if n_past < 1:
            raise ConfigError(f"n_past must be >= 1, got {n_past}")
        self.task, self.n_past = task, int(n_past)
        self.goal = np.array(task.goal)
        self.reset()

    def reset(self) -> np.ndarray:
        """Rebuild the task's start and run the ``n_past`` zero-motion steps; returns the last frame."""
        self.episode = Episode(self.task.seed, TASK_SPLIT, self.task.index, hidden=True)
        self.gripper = float(self.episode.world.gripper)
        self.frames: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.positions: list[np.ndarray] = []
        for _ in range(self.n_past):
            self.step(zero_action(self.gripper))
        return self.frames[-1]

    @property
    def steps_taken(self) -> int:
        """Steps executed by the agent (after the zero-motion context steps)."""
        return len(self.actions) - self.n_past

    def step(self, action) -> np.ndarray:
        """Execute one action (dx, dy, dz, gripper) in dataset units; returns the new frame."""
        a = np.asarray(action, dtype=np.float64)
        move = self.clip_move(a[:2]) if a.shape == (4,) else None
        self.episode.step(action)  # checks the action
        self.actions.append(np.array([*move, a[2], float(np.clip(a[3], -1.0, 1.0))]))
        self.positions.append(self.episode.position())
        self.frames.append(self.episode.render())
        return self.frames[-1]

    def clip_move(self, dxy: np.ndarray) -> np.ndarray:
        """(dx, dy) as ``Episode.step`` will execute it from here (the set-point kept on the table)."""
        return self.episode.clip_move(np.asarray(dxy, dtype=np.float64) * WORLD) / WORLD

    def render(self) -> np.ndarray:
        """The current frame, uint8 (64, 64, 3)."""
        return self.episode.render()

    def effector_position(self) -> np.ndarray:
        """(x, y, z) of the end-effector in dataset units."""
        return self.episode.position()

    def object_positions(self) -> np.ndarray:
        """(n_objects, 2) area centroids of every object in px."""
        return object_centres(self.episode.world)

    def object_position(self) -> np.ndarray:
        """(2,) the task's object in px."""
        return object_centre(self.episode.world, self.task.object)

    def object_friction(self) -> float:
        """The task's object's hidden sliding friction scale (``synth.FRICTION_RANGE``): for diagnostics;
        no planner reads it."""
        return float(self.episode.world.objects[self.task.object]["friction"])

    def distance(self) -> float:
        """The task's object to the goal, px."""
        return float(np.linalg.norm(self.object_position() - self.goal))

    def success(self, radius: float = SUCCESS_RADIUS_PX) -> bool:
        return self.distance() <= radius

    # -- the simulator as a model --------------------------------------------------------

    def snapshot(self) -> bytes:
        """The current physical state, to start simulated futures from with :meth:`fork`."""
        return pickle.dumps(self.episode.world)

    def fork(self, snapshot: bytes) -> Episode:
        """An independent episode at a :meth:`snapshot`'s state (its renderer shared, read-only).

        Unpickling a snapshot (~0.6 ms) is faster than ``copy.deepcopy`` of the world (~1.6 ms)
        and, after ~4 steps, than re-simulating the episode from its start; a copy lacks
        pymunk's contact caches, so a pushed object can end ~0.2 px from where the original
        would put it over 10 steps (the simulator arm's "model" is that close to exact).
        """
        sim = copy.copy(self.episode)
        sim.world = pickle.loads(snapshot)
        return sim
