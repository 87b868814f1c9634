"""The embedded default dataset: a BAIR-like pushing world with real 2D physics.

A top-down view of a walled table (a bin). A robot end-effector, seen as a grey
disc on an arm that reaches in from off-screen, is driven by actions
``(dx, dy, dz, gripper)`` and pushes 1-3 rigid objects of random shape, size,
colour and mass. Physics is pymunk (Chipmunk2D); frames are drawn at 4x with
PIL and downsampled with a Lanczos filter (antialiasing), 64x64 RGB, 30 steps.
The output is exactly the processed BAIR layout (see ``layout.py``), so every
reader treats synthetic and real data alike.

Semantics, per step t = 0..29 (all in table units, the table spans [0, 1]):
  * action t = (dx, dy, dz, gripper): the commanded displacement of the
    end-effector's set-point during step t, and the gripper command in [-1, 1];
  * position t = the true (x, y, z) of the end-effector *after* step t;
  * frame t = the scene after step t.
The end-effector is a dynamic body pulled toward the set-point through a
force-limited pivot joint: a kinematic body would have infinite force and
crush objects through walls, a force-limited joint lets it push and be pushed
back. A top-down table has no gravity, so sliding and spinning friction are a
pivot joint and a gear joint to the static body with zero bias and a force
cap of mu*m*g (the pymunk "tank" recipe). When z is raised above the objects'
height the disc stops colliding with them and passes over.

Actions come from smooth random plans: mostly "push" plans (approach a point
behind a chosen object, then drive through it), sometimes a lifted move to a
random point. With ``release`` > 0 (``vidpred data synth --release``) that share of the push
plans *strike* instead: full speed from the point behind the object, a stop dead after
STRIKE_PX, then STRIKE_HOLD still steps, so a slippery object leaves the arm at speed and glides
on, as it does under a planner's abrupt moves; 0 (the default) draws nothing extra and gives the
data of before bit for bit. Measured with ``python -m vidpred.data.synth --measure 200
--hidden-causes off`` (seed 0, 200 train sequences, the world without hidden
causes): some object ends more than 2 px from its start in 99.0% of sequences
(95.5% above 5 px, 81% above 10 px; median largest displacement 16.5 px of 64);
see ``benchmarks/RESULTS.md``.

Hidden causes (``hidden=True``, ``vidpred data synth --hidden-causes on``, the
default): every object gets a sliding friction scale, log-uniform in
FRICTION_RANGE (some stop at once, some glide far), and with probability
HEAVY_PROBABILITY it is too heavy for the effector's force limit: the arm stalls
against it and slides around it. Nothing in the frames tells these apart, so the
outcome of a push is uncertain, as on real BAIR. They come from their own random
stream, so the visible start (table, objects, colours) does not change with them;
and the arm starts next to its first push (APPROACH_PX), so the push and its
outcome fall inside the first 12 frames that the evaluation scores. Measured with
:func:`measure_hidden_spread` (32 test starts of seed 0, 8 draws each, recorded in
``synth.json``): pushed objects' final positions spread by 6.3 px on average
(median 5.8, max 16.6; 6.2 / 5.6 / 16.6 before the set-point fix of
:meth:`PushWorld.step`). ``hidden=False`` is the deterministic world of vidpred 0.1,
bit for bit (its set-point moves 1.1x the command).

Every sequence is seeded from ``(seed, split, index)`` alone, so the output is
identical for any number of worker processes. :class:`Episode` exposes a
sequence's world for driving it with other actions (what-if pictures, planning);
:func:`replay` re-runs a start under other actions or other hidden properties.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pymunk
from PIL import Image, ImageDraw
from tqdm import tqdm

from vidpred.data.layout import (
    IMAGE_SIZE, SEQ_LEN, SPLITS, check_workers, read_json, replace_dir, write_sequence,
)
from vidpred.errors import ConfigError, DataError

# World units are output pixels: the table is 64 x 64 units.
WORLD = float(IMAGE_SIZE)
SUPERSAMPLE = 4  # render at 256x256, downsample to 64x64
WALL = 3.0  # bin wall thickness (units)
EFF_RADIUS = 3.0
OBJECT_HEIGHT = 0.05  # table units; the disc collides with objects below this z
Z_LOW, Z_HIGH = 0.02, 0.14
SUBSTEPS = 10
DT = 0.01  # 10 substeps of 10 ms: 10 frames per second like BAIR
FRICTION_ACCEL = 150.0  # mu * g in units/s^2: a pushed object stops within ~0.2 s
EFF_MAX_FORCE = 4000.0  # far above any object's friction, far below "infinite"
EFF_MAX_SPEED = 250.0  # units/s the joint may use to catch up with the set-point
PUSH_THRESHOLD_PX = 2.0  # an object "was pushed" if it ends this far from its start
TRAJ_GROUP = 256  # sequences per traj_<a>_to_<b> folder, as in BAIR
# Hidden causes (``hidden=True``): per-object properties that change the outcome of a
# push and cannot be read from the frames before it. Drawn from their own random
# stream, so the visible world (layout, shapes, colours, actions) is the same either way.
FRICTION_RANGE = (0.05, 3.0)  # sliding friction scale, log-uniform: stops at once .. glides far
HEAVY_PROBABILITY = 0.3  # an object the effector cannot move: its friction exceeds the force limit
HEAVY_MASS_FACTOR = 20.0
HEAVY_MIN_FRICTION = 3.0  # FRICTION_ACCEL * 3 * (0.5 * 20) = 4500 > EFF_MAX_FORCE
# With hidden causes the arm starts this far (px) before the point behind its first object, so
# the first push, and how the object answers it, falls inside the first 12 frames (the
# evaluation window) instead of after a long approach.
APPROACH_PX = 3.0
# The step convention, recorded in synth.json: action t is executed during step t and
# frame t shows its result, so action t "produces" frame t (model.action_lag = 0).
# On BAIR action[t] acts between frames t and t+1 (model.action_lag = 1).
ACTION_CONVENTION = "action t is executed during step t and produces frame t"
ACTION_LAG = 0
# Strikes (``release`` > 0): the arm travels this far (px) from the point behind the object at
# full speed, then holds still for this many steps (integers, upper bound excluded).
STRIKE_PX = (4.0, 12.0)
STRIKE_HOLD = (3, 9)
SPREAD_STARTS = 32  # test starts re-simulated to measure the hidden causes' spread
SPREAD_DRAWS = 8  # hidden-property draws per start

CAT_OBJECT, CAT_EFFECTOR, CAT_WALL = 0b001, 0b010, 0b100
# Seed keys of the splits: train/validate/test are the dataset's (its bytes depend on them);
# "plan" keys the planning tasks (vidpred.planning), so no task is a dataset sequence.
SPLIT_IDS = {**{name: i for i, name in enumerate(SPLITS)}, "plan": 3}


# ----------------------------------------------------------------------------
# Physics
# ----------------------------------------------------------------------------

def _random_shape(rng: np.random.Generator) -> tuple[str, float, list[tuple[float, float]]]:
    """(kind, circumradius, vertices around the origin); circles have no vertices."""
    radius = float(rng.uniform(4.5, 8.0))
    kind = rng.choice(["circle", "box", "triangle", "pentagon", "hexagon", "blob"])
    if kind == "circle":
        return "circle", radius * 0.85, []
    if kind == "box":
        aspect = rng.uniform(0.45, 1.0)
        w, h = radius * 1.3, radius * 1.3 * aspect
        return "box", radius, [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    if kind == "blob":  # irregular convex polygon
        angles = np.sort(rng.uniform(0, 2 * math.pi, 7))
        radii = rng.uniform(0.75, 1.0, 7) * radius
    else:
        n = {"triangle": 3, "pentagon": 5, "hexagon": 6}[kind]
        angles = np.arange(n) * 2 * math.pi / n
        radii = np.full(n, radius)
    return str(kind), radius, [(float(r * math.cos(a)), float(r * math.sin(a))) for a, r in zip(angles, radii)]


class PushWorld:
    """One episode: the pymunk space, its bodies, and the end-effector controller state."""

    def __init__(self, rng: np.random.Generator, hidden_rng: np.random.Generator | None = None,
                 exact_setpoint: bool = False):
        self.rng = rng
        self.hidden_rng = hidden_rng  # None: every object has the same friction per unit mass
        # False: the set-point of vidpred 0.1's world, which moves 1.1x the command (see step)
        self.exact_setpoint = exact_setpoint
        self.space = pymunk.Space()
        self.space.gravity = (0.0, 0.0)
        self.static = self.space.static_body
        self._add_walls()
        self.objects = []  # dicts: body, shape, kind, vertices, radius, colour
        self._add_effector()
        self._add_objects(int(rng.integers(1, 4)))

    def _add_walls(self) -> None:
        lo, hi = WALL, WORLD - WALL
        corners = [(lo, lo), (hi, lo), (hi, hi), (lo, hi)]
        for a, b in zip(corners, corners[1:] + corners[:1]):
            seg = pymunk.Segment(self.static, a, b, 0.5)
            seg.friction = 0.4
            seg.filter = pymunk.ShapeFilter(categories=CAT_WALL)
            self.space.add(seg)

    def _add_effector(self) -> None:
        rng = self.rng
        self.target = pymunk.Body(body_type=pymunk.Body.KINEMATIC)  # the set-point
        start = rng.uniform(WALL + EFF_RADIUS + 2, WORLD - WALL - EFF_RADIUS - 2, 2)
        self.target.position = tuple(start)
        self.eff = pymunk.Body(2.0, float("inf"))  # infinite moment: the disc does not spin
        self.eff.position = tuple(start)
        shape = pymunk.Circle(self.eff, EFF_RADIUS)
        shape.friction = 0.6
        self.eff_shape = shape
        joint = pymunk.PivotJoint(self.target, self.eff, (0, 0), (0, 0))
        joint.max_force = EFF_MAX_FORCE
        joint.max_bias = EFF_MAX_SPEED
        self.space.add(self.target, self.eff, shape, joint)
        self.z = Z_LOW
        self.gripper = float(rng.choice([-1.0, 1.0]))
        self._set_collision()

    def _set_collision(self) -> None:
        # Lifted above the objects' height, the disc only meets the walls.
        mask = CAT_WALL if self.z > OBJECT_HEIGHT else (CAT_WALL | CAT_OBJECT)
        self.eff_shape.filter = pymunk.ShapeFilter(categories=CAT_EFFECTOR, mask=mask)

    def _add_objects(self, count: int) -> None:
        rng = self.rng
        for _ in range(count):
            kind, radius, verts = _random_shape(rng)
            for _attempt in range(50):  # rejection-sample a free spot
                pos = rng.uniform(WALL + radius + 1, WORLD - WALL - radius - 1, 2)
                clear = np.linalg.norm(pos - np.array(self.eff.position)) > radius + EFF_RADIUS + 3
                clear &= all(np.linalg.norm(pos - np.array(o["body"].position)) > radius + o["radius"] + 1
                             for o in self.objects)
                if clear:
                    break
            else:
                continue  # table too crowded; fewer objects is fine
            mass = float(rng.uniform(0.5, 2.5))
            friction = 1.0
            if self.hidden_rng is not None:
                friction, heavy = _hidden_properties(self.hidden_rng)
                if heavy:
                    mass *= HEAVY_MASS_FACTOR
                    friction = max(friction, HEAVY_MIN_FRICTION)
            if kind == "circle":
                body = pymunk.Body(mass, pymunk.moment_for_circle(mass, 0, radius))
                shape = pymunk.Circle(body, radius)
            else:
                body = pymunk.Body(mass, pymunk.moment_for_poly(mass, verts))
                shape = pymunk.Poly(body, verts)
            body.position = tuple(pos)
            body.angle = float(rng.uniform(0, 2 * math.pi))
            shape.friction = 0.5
            shape.filter = pymunk.ShapeFilter(categories=CAT_OBJECT)
            # Top-down friction against the table: zero-bias joints whose force cap
            # is the Coulomb friction mu*m*g (and a matching torque).
            slide = pymunk.PivotJoint(self.static, body, (0, 0), (0, 0))
            spin = pymunk.GearJoint(self.static, body, 0.0, 1.0)
            slide.max_bias = spin.max_bias = 0.0
            slide.max_force, spin.max_force = table_friction(friction, mass, radius)
            self.space.add(body, shape, slide, spin)
            hue = rng.uniform()
            colour = colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 0.9), rng.uniform(0.45, 0.95))
            self.objects.append(dict(body=body, shape=shape, kind=kind, vertices=verts, radius=radius,
                                     colour=tuple(int(255 * c) for c in colour), mass=mass,
                                     friction=friction))

    def object_positions(self) -> np.ndarray:
        return np.array([tuple(o["body"].position) for o in self.objects]).reshape(-1, 2)

    def step(self, dxy: np.ndarray, dz: float, gripper: float) -> None:
        """Move the set-point by ``dxy`` (units) over one frame and simulate it.

        The set-point moves in SUBSTEPS equal parts at constant velocity, so the joint sees a
        smooth trajectory. pymunk moves a kinematic body by its velocity during each
        ``space.step``; the world of vidpred 0.1 (``exact_setpoint=False``, kept bit for bit)
        also placed it at the end of each part first, so its set-point moved 1.1x the command.
        With ``exact_setpoint`` it starts each part where the last ended and the step moves it
        by exactly ``dxy``."""
        start = np.array(self.target.position)
        lead = 0 if self.exact_setpoint else 1
        for s in range(1, SUBSTEPS + 1):
            self.target.position = tuple(start + dxy * (s - 1 + lead) / SUBSTEPS)
            self.target.velocity = tuple(dxy / (SUBSTEPS * DT))
            self.space.step(DT)
        self.z = float(np.clip(self.z + dz, 0.0, 0.3))
        self.gripper = gripper
        self._set_collision()


def table_friction(friction: float, mass: float, radius: float) -> tuple[float, float]:
    """(force, torque) caps of an object's top-down friction joints (sliding, spinning) against the
    table: the Coulomb friction mu*m*g with mu*g = ``FRICTION_ACCEL * friction``."""
    return FRICTION_ACCEL * friction * mass, FRICTION_ACCEL * friction * mass * radius * 0.5


def _hidden_properties(rng: np.random.Generator) -> tuple[float, bool]:
    """(sliding friction scale, heavy?) of one object."""
    lo, hi = np.log(FRICTION_RANGE[0]), np.log(FRICTION_RANGE[1])
    return float(np.exp(rng.uniform(lo, hi))), bool(rng.uniform() < HEAVY_PROBABILITY)


class Planner:
    """Smooth random set-point motion, biased toward pushing objects."""

    def __init__(self, world: PushWorld, rng: np.random.Generator, release: float = 0.0):
        self.world, self.rng = world, rng
        self.release = release  # the share of push plans that strike and let go (see _plan)
        self.strike = False  # the current plan strikes
        self.hold = 0  # zero-motion steps left after a strike
        self.speed = float(rng.uniform(1.6, 3.0))  # units per frame
        self.velocity = np.zeros(2)
        self.waypoints: list[tuple[np.ndarray, float]] = []  # (xy, z target)
        self.gripper = world.gripper
        self._plan(push_probability=1.0)

    def _clamp(self, xy: np.ndarray) -> np.ndarray:
        margin = WALL + EFF_RADIUS
        return np.clip(xy, margin, WORLD - margin)

    def _plan(self, push_probability: float = 0.75) -> None:
        rng, world = self.rng, self.world
        self.strike = False
        if world.objects and rng.uniform() < push_probability:
            obj = world.objects[int(rng.integers(len(world.objects)))]
            centre = np.array(obj["body"].position)
            angle = rng.uniform(0, 2 * math.pi)
            direction = np.array([math.cos(angle), math.sin(angle)])
            behind = centre - direction * (obj["radius"] + EFF_RADIUS + 1.5)
            # A strike (probability ``release``; no draw at 0, so the world of release 0 is the one
            # before strikes, bit for bit): drive through at full speed from the point behind for
            # STRIKE_PX, then stop dead and hold still for STRIKE_HOLD steps, so a slippery object
            # leaves the arm at speed and glides on, as under a planner's abrupt moves.
            self.strike = self.release > 0 and rng.uniform() < self.release
            if self.strike:
                through = behind + direction * rng.uniform(*STRIKE_PX)
            else:
                through = centre + direction * rng.uniform(6.0, 16.0)
            self.waypoints = [(self._clamp(behind), Z_LOW), (self._clamp(through), Z_LOW)]
        else:
            lift = Z_HIGH if rng.uniform() < 0.4 else Z_LOW
            goal = rng.uniform(WALL + EFF_RADIUS, WORLD - WALL - EFF_RADIUS, 2)
            self.waypoints = [(goal, lift), (goal, Z_LOW)]
        if rng.uniform() < 0.3:
            self.gripper = -self.gripper  # occasionally open/close, as BAIR's arm does

    def next_action(self) -> tuple[np.ndarray, float, float]:
        """(dxy in units, dz, gripper) for the coming frame."""
        if self.hold:
            self.hold -= 1
            return np.zeros(2), 0.0, self.gripper
        here = np.array(self.world.target.position)
        goal, z_goal = self.waypoints[0]
        delta = goal - here
        dist = float(np.linalg.norm(delta))
        if dist < 1.0 and abs(self.world.z - z_goal) < 0.01:
            self.waypoints.pop(0)
            if not self.waypoints:
                if self.strike:  # the strike's end: stop dead, then hold
                    self.velocity = np.zeros(2)
                    self.hold = int(self.rng.integers(*STRIKE_HOLD)) - 1
                    self._plan()
                    return np.zeros(2), 0.0, self.gripper
                self._plan()
            goal, z_goal = self.waypoints[0]
            delta, dist = goal - here, float(np.linalg.norm(goal - here))
        want = delta / dist * min(self.speed, dist) if dist > 1e-6 else np.zeros(2)
        if self.strike and len(self.waypoints) == 1:
            self.velocity = want  # the strike: full speed at once, no low-pass
        else:
            self.velocity = 0.55 * self.velocity + 0.45 * want  # low-pass: smooth, BAIR-like motion
        new = self._clamp(here + self.velocity)
        dz = float(np.clip(z_goal - self.world.z, -0.03, 0.03))
        return new - here, dz, self.gripper


# ----------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------

class Renderer:
    """Draws the scene at SUPERSAMPLE x resolution and downsamples (antialiasing)."""

    def __init__(self, rng: np.random.Generator):
        size = int(WORLD * SUPERSAMPLE)
        # A cloth-like table colour: varied brightness, a mild tint.
        base = np.array([150, 138, 122]) * rng.uniform(0.85, 1.12) + rng.uniform(-8, 8, 3)
        coarse = Image.fromarray(rng.uniform(-12, 12, (8, 8)).astype(np.float32), "F")
        texture = np.asarray(coarse.resize((size, size), Image.BICUBIC))[..., None]
        grain = rng.uniform(-6, 6, (size, size, 1))
        table = np.clip(base + texture + grain, 0, 255).astype(np.uint8)
        self.background = Image.fromarray(table, "RGB")
        draw = ImageDraw.Draw(self.background)
        s, w = SUPERSAMPLE, WALL * SUPERSAMPLE
        wall_colour = tuple(int(c) for c in np.clip(base * 0.55, 0, 255))
        for box in [(0, 0, size, w), (0, size - w, size, size), (0, 0, w, size), (size - w, 0, size, size)]:
            draw.rectangle(box, fill=wall_colour)
        draw.rectangle((w, w, size - w, size - w), outline=tuple(int(c) for c in base * 0.8), width=s // 2)
        self.shadow = tuple(int(c) for c in np.clip(base * 0.72, 0, 255))
        # The arm reaches in from a base off the top edge, like BAIR's Sawyer.
        self.arm_base = np.array([rng.uniform(20, 44), -45.0])

    def render(self, world: PushWorld) -> np.ndarray:
        s = SUPERSAMPLE
        img = self.background.copy()
        draw = ImageDraw.Draw(img)
        for obj in world.objects:
            self._draw_object(draw, obj, offset=(0.7, 0.9), fill=self.shadow, outline=None)
            dark = tuple(int(c * 0.6) for c in obj["colour"])
            self._draw_object(draw, obj, offset=(0, 0), fill=obj["colour"], outline=dark)
        # Seen from above, a raised effector is closer to the camera: draw it larger.
        grow = 1.0 + 3.0 * world.z
        pos = np.array(world.eff.position)
        arm_dir = pos - self.arm_base
        arm_dir /= max(np.linalg.norm(arm_dir), 1e-6)
        side = np.array([-arm_dir[1], arm_dir[0]])
        draw.line([tuple(self.arm_base * s), tuple(pos * s)], fill=(72, 74, 80), width=int(3.4 * grow * s))
        draw.line([tuple(self.arm_base * s), tuple(pos * s)], fill=(112, 114, 120), width=int(1.2 * grow * s))
        opening = EFF_RADIUS * grow * (0.75 + 0.25 * (world.gripper + 1))
        for sign in (-1, 1):  # two gripper fingers either side of the wrist
            finger = (pos + sign * side * opening) * s
            r = 1.1 * grow * s
            draw.ellipse([finger[0] - r, finger[1] - r, finger[0] + r, finger[1] + r], fill=(60, 60, 66))
        r = EFF_RADIUS * grow * s
        c = pos * s
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=(128, 130, 138), outline=(52, 52, 58),
                     width=s)
        return np.asarray(img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS))

    @staticmethod
    def _draw_object(draw: ImageDraw.ImageDraw, obj: dict, offset, fill, outline) -> None:
        s = SUPERSAMPLE
        body = obj["body"]
        centre = (np.array(body.position) + offset) * s
        if obj["kind"] == "circle":
            r = obj["radius"] * s
            draw.ellipse([centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r], fill=fill,
                         outline=outline, width=s)
            if outline is not None:  # a stripe so rotation is visible
                tip = centre + r * 0.8 * np.array([math.cos(body.angle), math.sin(body.angle)])
                draw.line([tuple(centre), tuple(tip)], fill=outline, width=s)
            return
        cos, sin = math.cos(body.angle), math.sin(body.angle)
        points = [(centre[0] + (x * cos - y * sin) * s, centre[1] + (x * sin + y * cos) * s)
                  for x, y in obj["vertices"]]
        draw.polygon(points, fill=fill, outline=outline, width=s if outline is not None else 1)


# ----------------------------------------------------------------------------
# Episodes and the dataset
# ----------------------------------------------------------------------------

class Episode:
    """One seeded episode you can drive: world, scripted planner and renderer.

    The start (table, objects, arm, scripted plan) is a pure function of
    ``(seed, split, index)``; the hidden properties come from their own stream
    ``(seed, split, index, hidden_draw)``, so ``hidden_draw`` resamples them and
    nothing else (draw 0 is the one the dataset was generated with).
    """

    def __init__(self, seed: int, split: str, index: int, hidden: bool = True, hidden_draw: int = 0,
                 release: float = 0.0):
        if split not in SPLIT_IDS:
            raise ConfigError(f"split must be one of {tuple(SPLIT_IDS)}, got {split!r}")
        key = (int(seed), SPLIT_IDS[split], int(index))
        rng = np.random.default_rng(key)
        hidden_rng = np.random.default_rng(key + (1 + int(hidden_draw),)) if hidden else None
        self.world = PushWorld(rng, hidden_rng, exact_setpoint=hidden)
        self.planner = Planner(self.world, rng, release=check_release(release))
        self.renderer = Renderer(rng)  # built even if unused: it draws from rng, as the plans do later
        if hidden:
            self._start_before_first_push()

    def _start_before_first_push(self) -> None:
        """Move the arm (set-point and disc) next to where its first push begins; no random
        draw, so the rest of the episode's randomness is unchanged."""
        world = self.world
        behind, _z = self.planner.waypoints[0]
        here = np.array(world.eff.position)
        gap = float(np.linalg.norm(behind - here))
        if gap <= APPROACH_PX:
            return
        start = behind - (behind - here) / gap * APPROACH_PX
        if any(np.linalg.norm(start - np.array(o["body"].position)) < o["radius"] + EFF_RADIUS + 1
               for o in world.objects):
            return  # the approach line passes through an object: keep the drawn start
        world.target.position = world.eff.position = tuple(start)

    def scripted_action(self) -> np.ndarray:
        """The random plan's next action (4,) in dataset units, without executing it."""
        dxy, dz, gripper = self.planner.next_action()
        return np.array([dxy[0] / WORLD, dxy[1] / WORLD, dz, gripper])

    def step(self, action) -> None:
        """Execute one action (dx, dy, dz, gripper) in dataset units (table fractions)."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (4,) or not np.isfinite(a).all():
            raise ConfigError(f"an action must be 4 finite numbers (dx, dy, dz, gripper), got {action!r}")
        self.world.step(self.clip_move(a[:2] * WORLD), float(a[2]), float(np.clip(a[3], -1.0, 1.0)))

    def clip_move(self, dxy: np.ndarray) -> np.ndarray:
        """The set-point move ``dxy`` (units) that :meth:`step` executes from here: cut where it
        would leave the table (as the scripted plans keep it on), else ``dxy`` itself, exactly."""
        here = np.array(self.world.target.position)
        margin = WALL + EFF_RADIUS
        if ((here + dxy < margin) | (here + dxy > WORLD - margin)).any():
            return np.clip(here + dxy, margin, WORLD - margin) - here
        return dxy

    def position(self) -> np.ndarray:
        """(x, y, z) of the end-effector in dataset units."""
        x, y = self.world.eff.position
        return np.array([x / WORLD, y / WORLD, self.world.z])

    def object_positions(self) -> np.ndarray:
        """(n_objects, 2) centres in px of the 64x64 frame."""
        return self.world.object_positions()

    def render(self) -> np.ndarray:
        """The current frame, uint8 (64, 64, 3)."""
        return self.renderer.render(self.world)


def check_release(release) -> float:
    """``release`` as a float in [0, 1], else a ConfigError naming it."""
    try:
        value = float(release)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"release must be a share of push plans in [0, 1], got {release!r}")
    return value


def simulate(seed: int, split: str, index: int, hidden: bool = False, release: float = 0.0) -> dict:
    """One sequence: frames uint8 (30, 64, 64, 3), actions (30, 4), positions (30, 3),
    object tracks (30, n_objects, 2) in px and the largest object displacement in px
    between the first and last frame. ``hidden``: objects get hidden friction and mass
    (``hidden=False`` is the world of vidpred <= 0.1, bit for bit); ``release``: the share of
    push plans that strike and let go (:class:`Planner`)."""
    episode = Episode(seed, split, index, hidden=hidden, release=release)
    frames, actions, positions, object_tracks = [], [], [], []
    for _t in range(SEQ_LEN):
        actions.append(episode.scripted_action())
        episode.step(actions[-1])  # dataset units x WORLD (a power of 2) is the scripted move, exactly
        positions.append(episode.position())
        frames.append(episode.render())
        object_tracks.append(episode.object_positions())
    tracks = np.stack(object_tracks)  # (30, n_objects, 2)
    return dict(frames=np.stack(frames), actions=np.array(actions, np.float32),
                positions=np.array(positions, np.float32), tracks=tracks, max_displacement=_moved(tracks))


def _moved(tracks: np.ndarray) -> float:
    return float(np.linalg.norm(tracks[-1] - tracks[0], axis=-1).max()) if tracks.shape[1] else 0.0


def replay(seed: int, split: str, index: int, actions, hidden: bool = True, hidden_draw: int = 0,
           render: bool = True, release: float = 0.0) -> dict:
    """Re-run the start of a sequence under other actions (a what-if) or other hidden
    properties: ``actions`` (n, 4) in dataset units, one per step from step 0.
    Returns frames uint8 (n, 64, 64, 3) (without ``render``: None), positions (n, 3)
    and object tracks (n, n_objects, 2) in px."""
    episode = Episode(seed, split, index, hidden=hidden, hidden_draw=hidden_draw, release=release)
    frames, positions, tracks = [], [], []
    for a in np.asarray(actions, dtype=np.float64):
        episode.step(a)
        positions.append(episode.position())
        tracks.append(episode.object_positions())
        if render:
            frames.append(episode.render())
    return dict(frames=np.stack(frames) if render else None, positions=np.array(positions, np.float32),
                tracks=np.stack(tracks))


def measure_hidden_spread(seed: int, starts: int = SPREAD_STARTS, draws: int = SPREAD_DRAWS,
                          release: float = 0.0) -> dict:
    """How uncertain the world is: re-simulate ``starts`` test sequences with their
    recorded actions and ``draws`` resampled hidden properties each, and measure how far
    the objects' final positions spread (px, per object: mean distance to the centroid of
    its final positions over the draws). Pushed objects are those that move more than
    PUSH_THRESHOLD_PX in some draw."""
    spreads, pushed = [], []
    for i in range(starts):
        recorded = scripted_actions(seed, "test", i, hidden=True, release=release)
        finals, moved = [], []
        for d in range(draws):
            tracks = replay(seed, "test", i, recorded, hidden=True, hidden_draw=d, render=False,
                            release=release)["tracks"]
            finals.append(tracks[-1])
            moved.append(np.linalg.norm(tracks[-1] - tracks[0], axis=-1))
        finals = np.stack(finals)  # (draws, n_objects, 2)
        if not finals.shape[1]:
            continue
        spread = np.linalg.norm(finals - finals.mean(0), axis=-1).mean(0)  # (n_objects,)
        spreads.extend(spread.tolist())
        pushed.extend((np.stack(moved).max(0) > PUSH_THRESHOLD_PX).tolist())
    spreads_arr, pushed_arr = np.array(spreads), np.array(pushed, bool)
    on_pushed = spreads_arr[pushed_arr] if pushed_arr.any() else np.zeros(1)
    return dict(starts=starts, draws=draws, objects=int(len(spreads_arr)), pushed_objects=int(pushed_arr.sum()),
                mean_px=round(float(spreads_arr.mean()), 3) if len(spreads_arr) else 0.0,
                pushed_mean_px=round(float(on_pushed.mean()), 3),
                pushed_median_px=round(float(np.median(on_pushed)), 3),
                pushed_max_px=round(float(on_pushed.max()), 3))


def scripted_actions(seed: int, split: str, index: int, hidden: bool, release: float = 0.0) -> np.ndarray:
    """The recorded actions (30, 4) of a sequence, from the physics alone (no rendering).
    The scripted plans aim at where objects are, so they depend on ``hidden``."""
    episode = Episode(seed, split, index, hidden=hidden, release=release)
    actions = []
    for _t in range(SEQ_LEN):
        actions.append(episode.scripted_action())
        episode.step(actions[-1])  # dataset units x WORLD (a power of 2) is the scripted move, exactly
    return np.array(actions)


def sequence_path(root: Path, split: str, index: int, count: int) -> Path:
    """``<root>/<split>/traj_<a>_to_<b>.tfrecords/<k>``, grouped 256 per folder like BAIR."""
    first = index // TRAJ_GROUP * TRAJ_GROUP
    last = min(first + TRAJ_GROUP, count) - 1
    return root / split / f"traj_{first}_to_{last}.tfrecords" / str(index - first)


def _write_one(task: tuple) -> float:
    root, split, index, count, seed, hidden, release = task
    episode = simulate(seed, split, index, hidden=hidden, release=release)
    write_sequence(sequence_path(Path(root), split, index, count), episode["frames"],
                   episode["actions"], episode["positions"], png_compress_level=3)
    return episode["max_displacement"]


SYNTH_INFO = "synth.json"


def generate(dst: str | os.PathLike, train: int, validate: int, test: int, seed: int = 0,
             workers: int = 1, overwrite: bool = False, quiet: bool = False, hidden: bool = True,
             release: float = 0.0) -> dict:
    """Write a synthetic dataset in the processed layout at ``dst``; returns its info.

    hidden: objects get hidden friction and mass (the outcome of a push is uncertain);
    False gives the deterministic world of vidpred <= 0.1, bit for bit. ``synth.json``
    records the step convention and the spread the hidden causes give
    (:func:`measure_hidden_spread`). ``release``: the share of the scripted arm's push plans that
    strike and let go (:class:`Planner`; 0, the default, adds no random draw: the data of before).

    Built in ``<dst>.tmp-XXXX`` and renamed at the end, so an interrupted run
    leaves nothing at ``dst``. If ``dst`` already holds a dataset generated with
    the same arguments, it is kept as is (the call is idempotent); any other
    existing ``dst`` is an error unless ``overwrite``.
    """
    counts = {"train": train, "validate": validate, "test": test}
    for name, n in counts.items():
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"--{name} must be a positive integer, got {n!r}")
    check_workers(workers)
    dst = Path(dst)
    release = check_release(release)
    params = dict(counts, seed=int(seed), hidden_causes=bool(hidden))
    if release:
        params["release"] = release  # absent at 0: datasets generated before strikes stay "the same"
    if dst.exists() and not overwrite:
        info_path = dst / SYNTH_INFO
        if info_path.exists():
            try:
                info = json.loads(info_path.read_text())
            except ValueError:
                info = {}
            if info.get("params") == params:
                if not quiet:
                    print(f"{dst}: synthetic dataset with these settings already exists; kept", file=sys.stderr)
                return info
        raise DataError(f"{dst}: already exists (expected a new path, or pass --force to replace it)")

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{dst.name}.tmp-", dir=dst.parent))
    tasks = [(str(tmp), split, i, n, int(seed), bool(hidden), release)
             for split, n in counts.items() for i in range(n)]
    started = time.perf_counter()
    try:
        bar = tqdm(total=len(tasks), desc="synth", unit="seq", disable=True if quiet else None, file=sys.stderr)
        if workers > 1:
            with get_context().Pool(workers) as pool:
                displacements = []
                for d in pool.imap(_write_one, tasks, chunksize=4):
                    displacements.append(d)
                    bar.update()
        else:
            displacements = []
            for task in tasks:
                displacements.append(_write_one(task))
                bar.update()
        bar.close()
        spread = measure_hidden_spread(int(seed), release=release) if hidden else None
        seconds = time.perf_counter() - started
        pushed = float(np.mean(np.array(displacements) > PUSH_THRESHOLD_PX))
        info = dict(params=params, generator="vidpred.data.synth", pushed_fraction=pushed,
                    push_threshold_px=PUSH_THRESHOLD_PX, hidden_causes=bool(hidden),
                    action_convention=ACTION_CONVENTION, action_lag=ACTION_LAG,
                    # final positions of pushed objects under resampled hidden properties,
                    # same start and actions; a deterministic world has no spread
                    hidden_spread_px=spread if spread is not None else dict(
                        starts=0, draws=0, objects=0, pushed_objects=0, mean_px=0.0, pushed_mean_px=0.0,
                        pushed_median_px=0.0, pushed_max_px=0.0),
                    seconds=round(seconds, 2), workers=workers)
        (tmp / SYNTH_INFO).write_text(json.dumps(info, indent=2) + "\n")
        replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not quiet:
        print(f"{dst}: {len(tasks)} sequences in {seconds:.1f} s, objects pushed in {pushed:.0%}"
              + (f", hidden causes spread pushed objects by {spread['pushed_mean_px']:.1f} px" if spread else
                 ", deterministic world (no hidden causes)"), file=sys.stderr)
    return info


def read_info(root: str | os.PathLike) -> dict | None:
    """The ``synth.json`` of a synthetic dataset root, or None (not generated here, e.g. BAIR)."""
    path = Path(root) / SYNTH_INFO
    info = read_json(path, SYNTH_INFO, missing_ok=True)
    if info is None:
        return None
    if not isinstance(info, dict) or not isinstance(info.get("params"), dict):
        raise DataError(f"{path}: not a vidpred synthetic dataset description (no 'params')")
    return info


def check_action_lag(root: str | os.PathLike, action_lag: int) -> None:
    """Refuse a causal model whose step convention is not the one ``synth.json`` records."""
    info = read_info(root)
    if info is None:
        return
    recorded = info.get("action_lag", ACTION_LAG)  # datasets written before it was recorded: same world
    if recorded != action_lag:
        raise ConfigError(f"model.action_lag={action_lag} but {Path(root) / SYNTH_INFO} records action_lag "
                          f"{recorded} ({info.get('action_convention', ACTION_CONVENTION)}); "
                          f"set model.action_lag={recorded}")


def measure_push_fraction(n: int = 200, seed: int = 0, hidden: bool = False) -> float:
    """Fraction of ``n`` train sequences where some object moves > PUSH_THRESHOLD_PX (no files)."""
    moved = [simulate(seed, "train", i, hidden=hidden)["max_displacement"] for i in range(n)]
    return float(np.mean(np.array(moved) > PUSH_THRESHOLD_PX))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Measure how often the synthetic arm pushes an object.")
    parser.add_argument("--measure", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-causes", choices=("on", "off"), default="on")
    ns = parser.parse_args()
    fraction = measure_push_fraction(ns.measure, ns.seed, ns.hidden_causes == "on")
    print(f"pushed fraction over {ns.measure} sequences: {fraction:.3f}")
