"""Unit tests of ``data/synth.py`` written against `make mutation` (docs/testing.md).

The default world (``hidden=False``) is pinned bit for bit by the sha256 test of
``tests/test_data_synth.py``; these tests check the rest against values computed here:
the ranges and rates of the random draws (shapes, hidden friction and mass, plans) over
many draws, the pymunk bodies, shapes and joints against the constants of the module
docstring, the set-point's ten substeps recorded through a counting space, the
planner's next move by its formula, a circle drawn on a plain scene pixel by pixel
(fill, outline, stripe, shadow), the arm's start 3 px before its first push, the
spread of the hidden causes recomputed from replays, and ``synth.json`` field by field.
All run in well under a second each, without training.
"""

import colorsys
import io
import json
import math
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pymunk
import pytest
from PIL import Image

from vidpred.data import synth
from vidpred.data.layout import read_sequence
from vidpred.errors import ConfigError, DataError

from test_mutants_convert import Terminal, last_bar_before  # a stderr that is a terminal, the bar's last state

MARGIN = 3.0 + 3.0  # wall + effector radius: where the set-point may go


# -- random draws ---------------------------------------------------------------------------


def test_random_shapes_have_their_documented_geometry_and_ranges():
    rng = np.random.default_rng(0)
    shapes = [synth._random_shape(rng) for _ in range(900)]
    kinds = [k for k, _, _ in shapes]
    counts = {k: kinds.count(k) for k in ("circle", "box", "triangle", "pentagon", "hexagon", "blob")}
    assert sum(counts.values()) == 900 and all(110 < n < 190 for n in counts.values()), counts  # 1/6 each
    radii, aspects, blob_ratio = [], [], []
    for kind, r, verts in shapes:
        assert isinstance(kind, str) and isinstance(r, float)
        assert all(isinstance(c, float) for v in verts for c in v)
        if kind == "circle":
            assert verts == []
            radii.append(r / 0.85)
            continue
        radii.append(r)
        pts = np.array(verts)
        if kind == "box":
            w, h = 1.3 * r, pts[2, 1] - pts[0, 1]
            np.testing.assert_allclose(pts, [[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
            aspects.append(h / w)
        elif kind == "blob":  # 7 vertices in angular order, 0.75 r .. r from the centre
            assert len(pts) == 7
            angles = np.arctan2(pts[:, 1], pts[:, 0]) % (2 * math.pi)
            assert np.all(np.diff(angles) > 0)
            blob_ratio.extend(np.linalg.norm(pts, axis=1) / r)
        else:  # regular polygons, the first vertex on the +x axis
            n = {"triangle": 3, "pentagon": 5, "hexagon": 6}[kind]
            want = [(r * math.cos(2 * math.pi * i / n), r * math.sin(2 * math.pi * i / n)) for i in range(n)]
            np.testing.assert_allclose(pts, want, atol=1e-12)
    assert 4.5 <= min(radii) < 4.55 and 7.95 < max(radii) <= 8.0
    assert 0.45 <= min(aspects) < 0.47 and 0.98 < max(aspects) <= 1.0
    assert 0.75 <= min(blob_ratio) < 0.76 and 0.995 < max(blob_ratio) <= 1.0


def test_hidden_properties_are_log_uniform_friction_and_a_thirty_percent_heavy_draw():
    rng = np.random.default_rng(1)
    draws = [synth._hidden_properties(rng) for _ in range(4000)]
    friction = np.array([f for f, _ in draws])
    heavy = np.array([h for _, h in draws])
    assert all(type(f) is float and type(h) is bool for f, h in draws)
    assert 0.05 <= friction.min() < 0.052 and 2.95 < friction.max() <= 3.0
    logs = np.log(friction)  # uniform in log: mean at the middle, a quarter below the first quartile
    assert abs(logs.mean() - (math.log(0.05) + math.log(3.0)) / 2) < 0.05
    assert abs(np.mean(friction < math.exp(math.log(0.05) + 0.25 * math.log(3.0 / 0.05))) - 0.25) < 0.02
    assert abs(heavy.mean() - 0.3) < 0.02
    # one draw: friction first, then the heavy draw, from the same stream
    g = np.random.default_rng(7)
    u_f, u_h = g.random(), g.random()
    f, h = synth._hidden_properties(np.random.default_rng(7))
    assert f == pytest.approx(math.exp(math.log(0.05) + u_f * math.log(3.0 / 0.05)), rel=1e-12)
    assert h == (u_h < 0.3)


# -- the pymunk world -----------------------------------------------------------------------


def test_walls_effector_and_objects_of_a_world():
    counts = set()
    for seed in range(40):
        world = synth.PushWorld(np.random.default_rng(seed))
        space = world.space
        assert space.gravity == (0.0, 0.0) and world.static is space.static_body
        walls = [s for s in space.shapes if isinstance(s, pymunk.Segment)]
        assert [(tuple(s.a), tuple(s.b)) for s in walls] == [((3, 3), (61, 3)), ((61, 3), (61, 61)),
                                                              ((61, 61), (3, 61)), ((3, 61), (3, 3))]
        assert all(s.radius == 0.5 and s.friction == 0.4 and s.filter.categories == 0b100 and s.body is world.static
                   for s in walls)
        # the effector: a non-spinning disc pulled to a kinematic set-point by a capped pivot joint
        eff = world.eff
        assert world.target.body_type == pymunk.Body.KINEMATIC and eff.body_type == pymunk.Body.DYNAMIC
        assert eff.mass == 2.0 and eff.moment == float("inf")
        assert world.eff_shape.radius == 3.0 and world.eff_shape.friction == 0.6 and world.eff_shape.body is eff
        assert tuple(eff.position) == tuple(world.target.position)
        assert all(8.0 <= c <= 56.0 for c in eff.position)
        assert world.z == 0.02 and world.gripper in (-1.0, 1.0)
        assert world.eff_shape.filter == pymunk.ShapeFilter(categories=0b010, mask=0b101)
        pivots = [c for c in space.constraints if isinstance(c, pymunk.PivotJoint)]
        drive = [c for c in pivots if c.a is world.target]
        assert len(drive) == 1 and drive[0].b is eff
        assert drive[0].max_force == 4000.0 and drive[0].max_bias == 250.0
        assert tuple(drive[0].anchor_a) == (0, 0) and tuple(drive[0].anchor_b) == (0, 0)
        assert {world.target, eff} <= set(space.bodies)
        # objects: on the table, clear of the disc and of each other, with table friction joints
        counts.add(len(world.objects))
        for i, o in enumerate(world.objects):
            body, shape, r, m = o["body"], o["shape"], o["radius"], o["mass"]
            pos = np.array(body.position)
            assert np.all(pos >= 3 + r + 1) and np.all(pos <= 61 - r - 1)
            assert np.linalg.norm(pos - np.array(eff.position)) > r + 3 + 3
            for other in world.objects[:i]:
                assert np.linalg.norm(pos - np.array(other["body"].position)) > r + other["radius"] + 1
            assert 0.5 <= m <= 2.5 and body.mass == pytest.approx(m) and o["friction"] == 1.0
            assert 0 <= body.angle < 2 * math.pi
            assert shape.friction == 0.5 and shape.filter.categories == 0b001 and shape.body is body
            if o["kind"] == "circle":
                assert isinstance(shape, pymunk.Circle) and shape.radius == r and o["vertices"] == []
                assert body.moment == pytest.approx(m * r * r / 2)
            else:
                assert isinstance(shape, pymunk.Poly)  # pymunk keeps the convex hull, in its own order
                hull = np.array([tuple(v) for v in shape.get_vertices()])  # a blob's hull may drop a vertex
                assert 3 <= len(hull) <= len(o["vertices"]) and (len(hull) == len(o["vertices"]) or o["kind"] == "blob")
                assert all(np.abs(np.array(o["vertices"]) - v).sum(1).min() < 1e-9 for v in hull)
                assert body.moment == pytest.approx(pymunk.moment_for_poly(m, o["vertices"]))
            slide = [c for c in pivots if c.b is body]
            spin = [c for c in space.constraints if isinstance(c, pymunk.GearJoint) and c.b is body]
            assert len(slide) == 1 and len(spin) == 1 and slide[0].a is world.static and spin[0].a is world.static
            assert slide[0].max_bias == 0.0 and slide[0].max_force == pytest.approx(150.0 * m)
            assert tuple(slide[0].anchor_a) == (0, 0) and tuple(slide[0].anchor_b) == (0, 0)
            assert spin[0].max_bias == 0.0 and spin[0].max_force == pytest.approx(150.0 * m * r * 0.5)
            assert spin[0].phase == 0.0 and spin[0].ratio == 1.0
            h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in o["colour"]))
            assert all(type(c) is int and 0 <= c <= 255 for c in o["colour"])
            assert 0.43 <= s <= 0.91 and 0.44 <= v <= 0.95
        np.testing.assert_array_equal(world.object_positions(),
                                      np.array([tuple(o["body"].position) for o in world.objects]).reshape(-1, 2))
    assert counts == {1, 2, 3}


def test_hidden_properties_make_objects_heavy_or_slippery():
    """Same visible draws; friction and mass from the hidden stream: heavy objects weigh 20x
    and have at least friction 3 (more than the effector's force can push)."""
    seen_heavy = seen_light = False
    for seed in range(12):
        plain = synth.PushWorld(np.random.default_rng(seed))
        hidden_rng = np.random.default_rng([seed, 99])
        world = synth.PushWorld(np.random.default_rng(seed), hidden_rng)
        ref = np.random.default_rng([seed, 99])
        assert len(world.objects) == len(plain.objects)
        for o, p in zip(world.objects, plain.objects):
            friction, heavy = synth._hidden_properties(ref)
            assert o["colour"] == p["colour"] and o["body"].position == p["body"].position
            mass = p["mass"] * 20.0 if heavy else p["mass"]
            friction = max(friction, 3.0) if heavy else friction
            assert o["mass"] == pytest.approx(mass) and o["friction"] == pytest.approx(friction)
            slide = [c for c in world.space.constraints if isinstance(c, pymunk.PivotJoint) and c.b is o["body"]][0]
            assert slide.max_force == pytest.approx(150.0 * friction * mass)
            spin = [c for c in world.space.constraints if isinstance(c, pymunk.GearJoint) and c.b is o["body"]][0]
            assert spin.max_force == pytest.approx(150.0 * friction * mass * o["radius"] * 0.5)
            if heavy:
                assert slide.max_force > 4000.0  # the effector cannot move it
            seen_heavy |= heavy
            seen_light |= not heavy
    assert seen_heavy and seen_light


class ScriptedSpots:
    """An rng for ``PushWorld._add_objects``: every shape a box of radius 5, the candidate
    spots (the draws of size 2) from a list, every other draw from a real generator."""

    def __init__(self, spots):
        self.spots, self.real, self.drawn = list(spots), np.random.default_rng(0), 0

    def uniform(self, low=0.0, high=1.0, size=None):
        if size == 2:
            self.drawn += 1
            return np.array(self.spots.pop(0), float)
        return 5.0 if (low, high) == (4.5, 8.0) else self.real.uniform(low, high, size)

    def choice(self, options):
        return "box"


def world_without_objects():
    """A world whose objects are removed and whose disc (and set-point) is at (20, 30)."""
    world = synth.PushWorld(np.random.default_rng(0))
    for o in world.objects:
        world.space.remove(o["body"], *o["body"].shapes, *o["body"].constraints)
    world.objects = []
    world.eff.position = world.target.position = (20.0, 30.0)
    return world


def test_objects_keep_strictly_clear_and_are_left_out_after_fifty_tries():
    """A spot is taken only if it is more than radius + 3 + 3 from the disc and more than the
    two radii + 1 from every earlier object (radius 5: more than 11 in both cases); after 50
    refused spots that object is left out and the next one is placed."""
    world = world_without_objects()
    world.rng = rng = ScriptedSpots([(31.0, 30.0), (31.5, 30.0),   # 11 from the disc: refused; 11.5: taken
                                     (31.5, 41.0), (31.5, 41.5)])  # 11 from the first object: refused; 11.5
    world._add_objects(2)
    assert [tuple(o["body"].position) for o in world.objects] == [(31.5, 30.0), (31.5, 41.5)]
    assert rng.drawn == 4 and rng.spots == []
    blocked = [(20.0, 30.0)] * 50  # on the disc
    world = world_without_objects()
    world.rng = rng = ScriptedSpots(blocked + [(40.0, 40.0)])
    world._add_objects(1)
    assert world.objects == [] and rng.drawn == 50  # the 51st spot is never drawn
    world.rng = rng = ScriptedSpots(blocked + [(40.0, 40.0)])
    world._add_objects(2)  # the first object is left out, the second goes to the next spot
    assert [tuple(o["body"].position) for o in world.objects] == [(40.0, 40.0)] and rng.drawn == 51


def test_collision_mask_follows_the_height_of_the_disc():
    world = synth.PushWorld(np.random.default_rng(0))
    for z, mask in ((0.0, 0b101), (0.05, 0b101), (0.0501, 0b100), (0.14, 0b100)):
        world.z = z
        world._set_collision()
        assert world.eff_shape.filter == pymunk.ShapeFilter(categories=0b010, mask=mask)


class CountingSpace:
    """Records every ``step`` call (dt and the set-point at that time) and forwards it."""

    def __init__(self, space, target):
        self.space, self.target, self.calls = space, target, []

    def step(self, dt):
        self.calls.append((dt, tuple(self.target.position), tuple(self.target.velocity)))
        self.space.step(dt)


def test_world_step_moves_the_set_point_in_ten_substeps_and_clips_z():
    world = synth.PushWorld(np.random.default_rng(3))
    start = np.array(world.target.position)
    world.space = counting = CountingSpace(world.space, world.target)
    dxy = np.array([2.5, -1.25])
    world.step(dxy, 0.5, -0.25)
    assert [c[0] for c in counting.calls] == [0.01] * 10
    for s, (_, pos, vel) in enumerate(counting.calls, 1):
        np.testing.assert_allclose(pos, start + dxy * s / 10, atol=1e-12)
        np.testing.assert_allclose(vel, dxy / 0.1)
    assert world.z == 0.3 and world.gripper == -0.25  # 0.02 + 0.5 clipped to 0.3
    assert world.eff_shape.filter.mask == 0b100  # lifted: passes over the objects
    world.step(np.zeros(2), -1.0, 1.0)
    assert world.z == 0.0 and world.gripper == 1.0 and world.eff_shape.filter.mask == 0b101
    world.step(np.zeros(2), 0.03, 1.0)
    assert world.z == pytest.approx(0.03)


def test_the_exact_set_point_moves_by_the_command():
    """``exact_setpoint`` (the world with hidden causes) starts each of the ten parts where the
    last one ended, start + dxy (s - 1) / 10 before substep s, and ends at start + dxy; the
    world of vidpred 0.1 (the default) places it at the end of each part first: 1.1 dxy."""
    for exact, lead in ((True, 0), (False, 1)):
        world = synth.PushWorld(np.random.default_rng(3), exact_setpoint=exact)
        assert world.exact_setpoint is exact
        start = np.array(world.target.position)
        world.space = counting = CountingSpace(world.space, world.target)
        dxy = np.array([2.5, -1.25])
        world.step(dxy, 0.0, 1.0)
        assert len(counting.calls) == 10
        for s, (_, pos, vel) in enumerate(counting.calls, 1):
            np.testing.assert_allclose(pos, start + dxy * (s - 1 + lead) / 10, atol=1e-12)
            np.testing.assert_allclose(vel, dxy / 0.1)
        np.testing.assert_allclose(world.target.position, start + dxy * (1 + lead / 10), atol=1e-12)
    assert synth.PushWorld(np.random.default_rng(3)).exact_setpoint is False
    assert synth.Episode(0, "train", 0, hidden=True).world.exact_setpoint is True
    assert synth.Episode(0, "train", 0, hidden=False).world.exact_setpoint is False
    default = synth.Episode(0, "train", 0).world  # hidden causes are on by default
    assert default.exact_setpoint is True and default.hidden_rng is not None


def test_the_disc_follows_a_free_set_point():
    world = synth.PushWorld(np.random.default_rng(3))
    world.objects = []
    for body in [b for b in world.space.bodies if b not in (world.target, world.eff)]:
        world.space.remove(body, *body.shapes, *body.constraints)
    here = np.array(world.target.position)
    goal = np.array([32.0, 32.0])
    for _ in range(30):
        world.step((goal - np.array(world.target.position)) * 0.3, 0.0, 1.0)
    assert np.linalg.norm(np.array(world.eff.position) - np.array(world.target.position)) < 0.5
    assert np.linalg.norm(np.array(world.target.position) - goal) < np.linalg.norm(here - goal) * 0.01 + 1e-6
    assert world.object_positions().shape == (0, 2)


# -- the scripted planner -------------------------------------------------------------------


def test_first_plan_is_a_push_through_an_object():
    """The first waypoint lies behind an object (radius + 3 + 1.5 from its centre), the second
    beyond it on the same line (6 to 16 from the centre); both on the table, low."""
    checked, speeds = 0, []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        world = synth.PushWorld(rng)
        planner = synth.Planner(world, rng)
        speeds.append(planner.speed)
        assert planner.gripper in (world.gripper, -world.gripper) and np.all(planner.velocity == 0)
        (behind, z0), (through, z1) = planner.waypoints
        assert z0 == z1 == 0.02 and len(planner.waypoints) == 2
        if not (np.all((behind > 6) & (behind < 58)) and np.all((through > 6) & (through < 58))):
            continue  # clamped to the table: the geometry below does not hold
        fits = []
        for o in world.objects:
            c, r = np.array(o["body"].position), o["radius"]
            d_behind, d_through = behind - c, through - c
            unit = d_behind / np.linalg.norm(d_behind)
            if (abs(np.linalg.norm(d_behind) - (r + 4.5)) < 1e-9 and 6 - 1e-9 <= np.linalg.norm(d_through) <= 16 + 1e-9
                    and np.allclose(d_through / np.linalg.norm(d_through), -unit)):
                fits.append(o)
        assert len(fits) >= 1, seed
        checked += 1
    assert checked > 30
    assert 1.6 <= min(speeds) < 1.7 and 2.9 < max(speeds) <= 3.0


def test_plans_without_objects_move_to_a_point_and_lift_sometimes():
    rng = np.random.default_rng(5)
    world = synth.PushWorld(rng)
    world.objects = []
    planner = synth.Planner(world, rng)
    lifts, flips, goals = [], [], []
    for _ in range(1000):
        before = planner.gripper
        planner._plan()
        (goal, lift), (goal2, low) = planner.waypoints
        assert np.array_equal(goal, goal2) and low == 0.02 and lift in (0.02, 0.14)
        lifts.append(lift == 0.14)
        flips.append(planner.gripper == -before)
        goals.append(goal)
    goals = np.array(goals)
    assert 6.0 <= goals.min() < 6.2 and 57.8 < goals.max() <= 58.0
    assert abs(np.mean(lifts) - 0.4) < 0.05 and abs(np.mean(flips) - 0.3) < 0.05


def test_later_plans_push_three_times_in_four():
    rng = np.random.default_rng(6)
    world = synth.PushWorld(rng)
    planner = synth.Planner(world, rng)
    pushes = []
    for _ in range(1000):
        planner._plan()
        (a, _), (b, _) = planner.waypoints
        pushes.append(not np.array_equal(a, b))
    assert abs(np.mean(pushes) - 0.75) < 0.05


def test_clamp_keeps_the_set_point_off_the_walls():
    planner = synth.Planner(synth.PushWorld(np.random.default_rng(0)), np.random.default_rng(0))
    np.testing.assert_array_equal(planner._clamp(np.array([0.0, 100.0])), [6.0, 58.0])
    np.testing.assert_array_equal(planner._clamp(np.array([6.5, 57.5])), [6.5, 57.5])


def next_action_by_hand(here, velocity, speed, goal, z, z_goal):
    delta = np.asarray(goal, float) - here
    dist = math.hypot(*delta)
    want = delta / dist * min(speed, dist) if dist > 1e-6 else np.zeros(2)
    v = 0.55 * np.asarray(velocity) + 0.45 * want
    new = np.clip(here + v, 6.0, 58.0)
    return new - here, max(-0.03, min(0.03, z_goal - z)), v


def planner_at(here, velocity, speed, waypoints, z, gripper=1.0):
    world = synth.PushWorld(np.random.default_rng(0))
    planner = synth.Planner(world, np.random.default_rng(1))
    world.target.position = tuple(here)
    world.z = z
    planner.velocity, planner.speed, planner.gripper = np.array(velocity, float), speed, gripper
    planner.waypoints = [(np.array(g, float), zg) for g, zg in waypoints]
    return planner


@pytest.mark.parametrize("case", [
    # far goal: full speed toward it, plus the low-passed previous velocity; z rises at most 0.03
    dict(here=(20.0, 30.0), velocity=(1.0, -0.5), speed=2.5, goal=(40.0, 10.0), z=0.02, z_goal=0.14),
    # near goal (closer than the speed): only the remaining distance; z falls at most 0.03
    dict(here=(20.0, 30.0), velocity=(0.0, 0.0), speed=2.5, goal=(21.2, 30.9), z=0.14, z_goal=0.02),
    # exactly 1.0 away is not reached yet
    dict(here=(20.0, 30.0), velocity=(0.3, 0.1), speed=2.0, goal=(21.0, 30.0), z=0.02, z_goal=0.02),
    # at the goal but not at its height: no move wanted, the old velocity decays
    dict(here=(20.0, 30.0), velocity=(0.4, 0.2), speed=2.0, goal=(20.0, 30.0), z=0.02, z_goal=0.14),
    # pushed against the wall: the set-point is clamped at 58
    dict(here=(57.0, 30.0), velocity=(3.0, 0.0), speed=3.0, goal=(80.0, 30.0), z=0.02, z_goal=0.02),
])
def test_next_action_by_hand(case):
    planner = planner_at(case["here"], case["velocity"], case["speed"], [(case["goal"], case["z_goal"])], case["z"])
    dxy, dz, gripper = planner.next_action()
    want_dxy, want_dz, want_v = next_action_by_hand(np.array(case["here"]), case["velocity"], case["speed"],
                                                    case["goal"], case["z"], case["z_goal"])
    np.testing.assert_allclose(dxy, want_dxy, atol=1e-12)
    np.testing.assert_allclose(planner.velocity, want_v, atol=1e-12)
    assert dz == pytest.approx(want_dz, abs=1e-12) and gripper == 1.0
    assert len(planner.waypoints) == 1


def test_next_action_moves_on_to_the_next_waypoint_and_replans_after_the_last():
    here = np.array([20.0, 30.0])
    planner = planner_at(here, (0.0, 0.0), 2.0, [((20.5, 30.0), 0.02), ((30.0, 30.0), 0.14)], z=0.025)
    dxy, dz, _ = planner.next_action()  # 0.5 px away and 0.005 below: reached, head for the next one
    want_dxy, want_dz, _ = next_action_by_hand(here, (0, 0), 2.0, (30.0, 30.0), 0.025, 0.14)
    np.testing.assert_allclose(dxy, want_dxy, atol=1e-12)
    assert dz == pytest.approx(want_dz) and len(planner.waypoints) == 1
    not_yet = planner_at(here, (0.0, 0.0), 2.0, [((20.5, 30.0), 0.02), ((30.0, 30.0), 0.14)], z=0.04)
    not_yet.next_action()  # 0.02 below its height: not reached
    assert len(not_yet.waypoints) == 2
    exactly = planner_at(here, (0.0, 0.0), 2.0, [((20.5, 30.0), 0.0), ((30.0, 30.0), 0.14)], z=0.01)
    exactly.next_action()  # exactly 0.01 above its height (0.01 - 0.0 has no rounding): not reached yet
    assert len(exactly.waypoints) == 2
    last = planner_at(here, (0.0, 0.0), 2.0, [((20.5, 30.0), 0.02)], z=0.02)
    last.next_action()
    assert len(last.waypoints) == 2 and not np.array_equal(last.waypoints[0][0], [20.5, 30.0])  # a new plan


# -- rendering ------------------------------------------------------------------------------


def plain_scene(kind, angle, vertices=(), radius=8.0, colour=(200, 40, 40), pos=(32.0, 32.0)):
    renderer = synth.Renderer(np.random.default_rng(0))
    obj = dict(body=SimpleNamespace(position=pos, angle=angle), kind=kind, radius=radius,
               vertices=list(vertices), colour=colour)
    world = SimpleNamespace(objects=[obj], z=0.02, gripper=1.0, eff=SimpleNamespace(position=(56.0, 56.0)))
    empty = SimpleNamespace(objects=[], z=0.02, gripper=1.0, eff=SimpleNamespace(position=(56.0, 56.0)))
    return renderer, renderer.render(world).astype(float), renderer.render(empty).astype(float)


def near(pixel, colour, tol=12):
    return np.abs(np.asarray(pixel, float) - np.asarray(colour, float)).max() <= tol


@pytest.mark.parametrize("angle", [0.0, math.pi / 2])
def test_a_circle_is_drawn_with_its_outline_stripe_and_shadow(angle):
    """Radius 8 at (32, 32): filled, outlined and striped from the centre toward its angle in
    0.6 x its colour, a shadow offset (0.7, 0.9) px below right; nothing beyond it."""
    colour, dark = (200, 40, 40), (120, 24, 24)
    renderer, img, table = plain_scene("circle", angle)
    u = np.array([math.cos(angle), math.sin(angle)])
    perp = np.array([-u[1], u[0]])

    def px(offset):  # the frame pixel whose centre is at (32, 32) + offset
        x, y = np.array([32.0, 32.0]) + offset
        return img[int(math.floor(y)), int(math.floor(x))]

    assert near(px(-4 * u), colour) and near(px(4 * perp), colour) and near(px(-4 * perp), colour)
    assert near(px(4.5 * u), dark, 30)  # the stripe, 0.8 r long
    assert near(px(-7.6 * u), dark, 40) and near(px(7.6 * perp), dark, 40)  # the outline, just inside r
    outside = [np.array(p, float) for p in [(32, 21), (43, 32), (21, 32), (32, 43)]]  # 11 px from the centre
    for p in outside:  # the table, up to the filter's ringing
        assert np.abs(img[int(p[1]), int(p[0])] - table[int(p[1]), int(p[0])]).max() <= 3
    # shadow: 8.5 px from the centre, below right darker than the table, above left not
    lo = img[int(32 + 8.5 * 0.707), int(32 + 8.5 * 0.707)]
    hi = img[int(32 - 8.5 * 0.707) - 1, int(32 - 8.5 * 0.707) - 1]
    t_lo = table[int(32 + 8.5 * 0.707), int(32 + 8.5 * 0.707)]
    t_hi = table[int(32 - 8.5 * 0.707) - 1, int(32 - 8.5 * 0.707) - 1]
    assert (t_lo - lo).mean() > 8 and abs((t_hi - hi).mean()) < 3
    mask = np.abs(img - np.array(colour)).max(-1) < 30
    ys, xs = np.nonzero(mask)
    assert mask.sum() > 0.6 * math.pi * 64  # most of the disc of radius 8
    assert np.hypot(xs + 0.5 - 32, ys + 0.5 - 32).max() < 8.0


def test_a_polygon_is_rotated_by_its_angle():
    """A triangle with a vertex at +x (radius 9), turned by 90 degrees: the vertex points to +y."""
    verts = [(9 * math.cos(2 * math.pi * i / 3), 9 * math.sin(2 * math.pi * i / 3)) for i in range(3)]
    _, img0, table = plain_scene("triangle", 0.0, verts, radius=9.0)
    _, img90, _ = plain_scene("triangle", math.pi / 2, verts, radius=9.0)
    colour = (200, 40, 40)
    assert near(img0[32, 32 + 5], colour) and not near(img0[32 + 5, 32], colour, 60)
    assert near(img90[32 + 5, 32], colour) and not near(img90[32, 32 + 5], colour, 60)
    assert np.abs(img0[32, 32 - 7] - table[32, 32 - 7]).max() <= 3  # the far side: -x is 4.5 from the centre


def test_table_colours_walls_and_arm():
    renderer, img, table = plain_scene("circle", 0.0)
    inner = table[10:50, 10:50].reshape(-1, 3).mean(0)  # the cloth: base colour + zero-mean texture
    wall = table[0, 30]
    np.testing.assert_allclose(wall, np.array(renderer.shadow) / 0.72 * 0.55, atol=2)
    assert np.all(np.abs(wall - 0.55 * inner) < 6) and np.all(np.abs(np.array(renderer.shadow) - 0.72 * inner) < 6)
    assert 20 <= renderer.arm_base[0] <= 44 and renderer.arm_base[1] == -45.0
    # the effector: a grey disc at its position, drawn over the arm
    assert near(table[56, 56], (128, 130, 138), 16)


def test_a_raised_effector_is_drawn_larger_and_an_open_gripper_wider():
    renderer = synth.Renderer(np.random.default_rng(0))

    def grey_pixels(z, gripper):
        world = SimpleNamespace(objects=[], z=z, gripper=gripper, eff=SimpleNamespace(position=(32.0, 40.0)))
        img = renderer.render(world).astype(int)
        dark = np.abs(img - np.array([60, 60, 66])).max(-1) < 12
        disc = np.abs(img - np.array([128, 130, 138])).max(-1) < 12
        return disc.sum(), dark

    low, dark_closed = grey_pixels(0.0, -1.0)
    high, _ = grey_pixels(0.3, -1.0)
    assert 4.0 < high / low < 6.5  # radius 3 (1 + 3 z) less the 1 px outline: (4.7 / 2) ** 2 = 5.5
    _, dark_open = grey_pixels(0.0, 1.0)
    spread = lambda m: np.nonzero(m)[1].max() - np.nonzero(m)[1].min()  # noqa: E731
    assert spread(dark_open) > spread(dark_closed)


# -- episodes -------------------------------------------------------------------------------


def test_episode_streams_are_keyed_by_seed_split_index_and_hidden_draw():
    for split, sid in (("train", 0), ("validate", 1), ("test", 2), ("plan", 3)):
        ep = synth.Episode(4, split, 5, hidden=False)
        ref = synth.PushWorld(np.random.default_rng((4, sid, 5)))
        np.testing.assert_array_equal(ep.object_positions(), ref.object_positions())
        for d in (0, 2):
            hidden = synth.Episode(4, split, 5, hidden=True, hidden_draw=d)
            ref_h = synth.PushWorld(np.random.default_rng((4, sid, 5)), np.random.default_rng((4, sid, 5, 1 + d)))
            assert [o["friction"] for o in hidden.world.objects] == [o["friction"] for o in ref_h.objects]
            assert [o["mass"] for o in hidden.world.objects] == [o["mass"] for o in ref_h.objects]
    assert synth.Episode(0, "train", 0, hidden=False).world.hidden_rng is None
    with pytest.raises(ConfigError) as err:
        synth.Episode(0, "val", 0)
    assert str(err.value) == "split must be one of ('train', 'validate', 'test', 'plan'), got 'val'"


def test_with_hidden_causes_the_arm_starts_three_px_before_its_first_push():
    moved = 0
    for index in range(12):
        drawn = synth.Episode(0, "train", index, hidden=False)
        ep = synth.Episode(0, "train", index, hidden=True)
        here = np.array(drawn.world.eff.position)  # the drawn start (the visible draws are the same)
        start = np.array(ep.world.eff.position)
        assert tuple(ep.world.target.position) == tuple(ep.world.eff.position)
        behind = ep.planner.waypoints[0][0]
        if np.array_equal(start, here):
            continue
        moved += 1
        assert np.linalg.norm(behind - start) == pytest.approx(3.0)
        # on the line from the drawn start to the point behind the object
        assert np.linalg.norm(behind - here) == pytest.approx(np.linalg.norm(start - here) + 3.0)
        assert all(np.linalg.norm(start - np.array(o["body"].position)) >= o["radius"] + 3 + 1 for o in ep.world.objects)
    assert moved >= 8


def test_start_before_first_push_keeps_a_close_or_blocked_start():
    ep = synth.Episode(0, "train", 1, hidden=False)
    world = ep.world
    here = np.array(world.eff.position)
    ep.planner.waypoints[0] = (here + np.array([3.0, 0.0]), 0.02)  # exactly 3 px away: stays
    ep._start_before_first_push()
    assert np.array_equal(np.array(world.eff.position), here)
    ep.planner.waypoints[0] = (here + np.array([0.0, 3.5]), 0.02)  # 3.5 px: moves 0.5 px toward it
    ep._start_before_first_push()
    np.testing.assert_allclose(world.eff.position, here + [0.0, 0.5])
    np.testing.assert_allclose(world.target.position, here + [0.0, 0.5])
    obj = world.objects[0]
    centre = np.array(obj["body"].position)
    world.eff.position = world.target.position = tuple(centre + [0.0, 20.0])
    ep.planner.waypoints[0] = (centre - [0.0, obj["radius"] + 5.0], 0.02)  # the start would be inside the object
    ep._start_before_first_push()
    np.testing.assert_allclose(world.eff.position, centre + [0.0, 20.0])


def test_episode_step_action_units_and_clipping():
    ep = synth.Episode(0, "test", 2, hidden=False)
    twin = synth.Episode(0, "test", 2, hidden=False)
    a = ep.scripted_action()
    dxy, dz, gripper = twin.planner.next_action()
    np.testing.assert_array_equal(a, [dxy[0] / 64, dxy[1] / 64, dz, gripper])
    for bad in ([0.1, 0.0, 0.0], [0.0, float("nan"), 0.0, 1.0], [[0.0] * 4]):
        with pytest.raises(ConfigError) as err:
            ep.step(bad)
        assert str(err.value) == f"an action must be 4 finite numbers (dx, dy, dz, gripper), got {bad!r}"
    calls = []
    real = ep.world.step
    ep.world.step = lambda dxy, dz, g: calls.append((dxy, dz, g)) or real(dxy, dz, g)
    ep.step([1 / 64, -2 / 64, 0.02, 5.0])  # one px right, two up, the gripper clipped to 1
    ep.step(np.array([0.0, 0.0, 0.0, -3.0], np.float32))
    assert [(list(d), z, g) for d, z, g in calls] == [([1.0, -2.0], 0.02, 1.0), ([0.0, 0.0], 0.0, -1.0)]
    assert all(type(z) is float and type(g) is float for _, z, g in calls)
    assert ep.world.gripper == -1.0 and ep.world.z == pytest.approx(0.04)
    ep.world.target.position = (10.0, 30.0)
    ep.step([-8 / 64, 0.0, 0.0, 1.0])  # cut at the margin (x = 6)
    np.testing.assert_array_equal(calls[-1][0], [-4.0, 0.0])
    x, y = ep.world.eff.position
    np.testing.assert_array_equal(ep.position(), [x / 64, y / 64, ep.world.z])
    np.testing.assert_array_equal(ep.object_positions(), ep.world.object_positions())
    np.testing.assert_array_equal(ep.render(), ep.renderer.render(ep.world))


def test_a_float32_action_moves_the_world_as_the_same_numbers_in_float64():
    """Planning hands actions over as float32: each is widened to float64 before it is scaled
    and cut into substeps, so the world moves exactly as under the same numbers in float64."""
    a32 = np.array([0.0123, -0.0456, 0.01, 0.5], np.float32)
    one, two = synth.Episode(0, "test", 2, hidden=True), synth.Episode(0, "test", 2, hidden=True)
    for _ in range(3):
        one.step(a32)
        two.step(a32.astype(np.float64))
    assert tuple(one.world.target.position) == tuple(two.world.target.position)
    assert tuple(one.world.eff.position) == tuple(two.world.eff.position) and one.world.z == two.world.z


def test_clip_move_stops_at_the_table_margin_and_is_exact_inside():
    ep = synth.Episode(0, "test", 2, hidden=False)
    ep.world.target.position = (10.0, 50.0)
    inside = np.array([0.3, -0.7])
    assert ep.clip_move(inside) is inside
    to_six = np.array([-4.0, 0.0])  # exactly to 6: not past the margin, so the move itself
    assert ep.clip_move(to_six) is to_six and to_six.tolist() == [-4.0, 0.0]
    np.testing.assert_array_equal(ep.clip_move(np.array([-5.0, 1.0])), [-4.0, 1.0])
    np.testing.assert_array_equal(ep.clip_move(np.array([2.0, 9.0])), [2.0, 8.0])
    to_58 = np.array([2.0, 8.0])  # exactly to 58: the move itself
    assert ep.clip_move(to_58) is to_58 and to_58.tolist() == [2.0, 8.0]


def test_simulate_replay_and_scripted_actions_agree():
    ep = synth.simulate(0, "validate", 1, hidden=True)
    assert ep["frames"].shape == (30, 64, 64, 3) and ep["frames"].dtype == np.uint8
    assert ep["actions"].dtype == np.float32 and ep["positions"].dtype == np.float32
    n = ep["tracks"].shape[1]
    assert ep["actions"].shape == (30, 4) and ep["positions"].shape == (30, 3) and ep["tracks"].shape == (30, n, 2)
    assert ep["max_displacement"] == pytest.approx(np.linalg.norm(ep["tracks"][-1] - ep["tracks"][0], axis=-1).max())
    actions = synth.scripted_actions(0, "validate", 1, hidden=True)
    assert actions.shape == (30, 4) and actions.dtype == np.float64
    np.testing.assert_array_equal(actions.astype(np.float32), ep["actions"])
    # the first 5 steps by hand: position t is the disc after action t, frame t the scene then
    manual = synth.Episode(0, "validate", 1, hidden=True)
    for t in range(5):
        manual.step(actions[t])
        np.testing.assert_array_equal(ep["positions"][t], manual.position().astype(np.float32))
        np.testing.assert_array_equal(ep["frames"][t], manual.render())
        np.testing.assert_array_equal(ep["tracks"][t], manual.object_positions())
    again = synth.replay(0, "validate", 1, actions[:5], hidden=True, render=False)
    assert again["frames"] is None and again["positions"].dtype == np.float32
    np.testing.assert_array_equal(again["positions"], ep["positions"][:5])
    np.testing.assert_array_equal(again["tracks"], ep["tracks"][:5])
    other = synth.replay(0, "validate", 1, actions[:5], hidden=True, hidden_draw=3)
    ref = synth.Episode(0, "validate", 1, hidden=True, hidden_draw=3)
    for a in actions[:5]:
        ref.step(a)
    np.testing.assert_array_equal(other["frames"][-1], ref.render())
    default = synth.replay(0, "validate", 1, actions[:2])  # hidden causes on, draw 0, rendered by default
    np.testing.assert_array_equal(default["frames"], ep["frames"][:2])
    assert synth.simulate(0, "validate", 1)["actions"].tobytes() == \
        synth.scripted_actions(0, "validate", 1, hidden=False).astype(np.float32).tobytes()  # hidden off by default


def test_moved_with_and_without_objects():
    tracks = np.zeros((3, 2, 2))
    tracks[-1, 1] = [3.0, 4.0]
    tracks[-1, 0] = [1.0, 0.0]
    assert synth._moved(tracks) == 5.0 and type(synth._moved(tracks)) is float
    assert synth._moved(np.zeros((3, 0, 2))) == 0.0
    tracks[1] = [[6.0, 8.0], [1.0, 1.0]]  # frame 1 is not the start: the displacement is from frame 0
    assert synth._moved(tracks) == 5.0


def spread_by_hand(seed, starts, draws, threshold=2.0):
    spreads, pushed = [], []
    for i in range(starts):
        actions = synth.scripted_actions(seed, "test", i, hidden=True)
        runs = [synth.replay(seed, "test", i, actions, hidden=True, hidden_draw=d, render=False)["tracks"]
                for d in range(draws)]
        finals = np.stack([r[-1] for r in runs])
        centroid = finals.mean(0)
        for k in range(finals.shape[1]):
            spreads.append(np.mean([np.linalg.norm(finals[d, k] - centroid[k]) for d in range(draws)]))
            pushed.append(max(np.linalg.norm(r[-1, k] - r[0, k]) for r in runs) > threshold)
    spreads, pushed = np.array(spreads), np.array(pushed)
    on = spreads[pushed] if pushed.any() else np.zeros(1)
    return dict(starts=starts, draws=draws, objects=len(spreads), pushed_objects=int(pushed.sum()),
                mean_px=round(spreads.mean(), 3), pushed_mean_px=round(on.mean(), 3),
                pushed_median_px=round(float(np.median(on)), 3), pushed_max_px=round(on.max(), 3))


def test_hidden_spread_by_hand():
    got = synth.measure_hidden_spread(0, starts=3, draws=3)
    assert got == spread_by_hand(0, 3, 3)
    assert got["pushed_objects"] >= 1 and got["objects"] > got["pushed_objects"]
    assert got["pushed_median_px"] != got["pushed_mean_px"]


def test_hidden_spread_when_nothing_is_pushed(monkeypatch):
    monkeypatch.setattr(synth, "PUSH_THRESHOLD_PX", 1e9)
    got = synth.measure_hidden_spread(0, starts=2, draws=2)
    assert got == spread_by_hand(0, 2, 2, threshold=1e9)
    assert got["pushed_objects"] == 0 and got["pushed_mean_px"] == got["pushed_max_px"] == 0.0


def test_hidden_spread_on_made_up_tracks(monkeypatch):
    """``measure_hidden_spread`` over tracks written here (3 frames, 2 draws): start 0 has no
    objects; start 1 has A (ends 2.0 and 1.0 px from its start: exactly the threshold, not
    pushed) and B (moves 5 px in the last frame only: pushed); start 2 has C (moved by frame 1
    already, then still: pushed). Spreads: A 0.5, B sqrt(5), C 1.5 sqrt(2)."""
    a0, a1 = [[10, 10], [10, 10], [12, 10]], [[10, 10], [10, 10], [11, 10]]
    b0, b1 = [[30, 30], [30, 30], [33, 34]], [[30, 30], [30, 30], [31, 30]]
    c0, c1 = [[20, 20], [23, 24], [23, 24]], [[20, 20], [20, 21], [20, 21]]
    tracks = {0: [np.zeros((3, 0, 2))] * 2,
              1: [np.stack([a0, b0], 1), np.stack([a1, b1], 1)],
              2: [np.array(c0)[:, None], np.array(c1)[:, None]]}
    recorded, calls = {}, []

    def scripted_actions(seed, split, index, hidden, release=0.0):
        assert (seed, split, hidden, release) == (7, "test", True, 0.25)
        recorded[index] = np.full((30, 4), float(index))
        return recorded[index]

    def replay(seed, split, index, actions, hidden=True, hidden_draw=0, render=True, release=0.0):  # its defaults
        assert actions is recorded[index] and release == 0.25
        calls.append((seed, split, index, hidden_draw, hidden, render))
        return dict(frames=None, positions=None, tracks=np.asarray(tracks[index][hidden_draw], float))

    monkeypatch.setattr(synth, "scripted_actions", scripted_actions)
    monkeypatch.setattr(synth, "replay", replay)
    got = synth.measure_hidden_spread(7, starts=3, draws=2, release=0.25)
    assert [c[:4] for c in calls] == [(7, "test", i, d) for i in range(3) for d in range(2)]
    assert all(hidden is True and not render for *_, hidden, render in calls)  # hidden causes on, no frames drawn
    a, b, c = 0.5, math.sqrt(5), 1.5 * math.sqrt(2)
    assert got == dict(starts=3, draws=2, objects=3, pushed_objects=2, mean_px=round((a + b + c) / 3, 3),
                       pushed_mean_px=round((b + c) / 2, 3), pushed_median_px=round((b + c) / 2, 3),
                       pushed_max_px=round(b, 3))
    assert (got["mean_px"], got["pushed_mean_px"], got["pushed_max_px"]) == (1.619, 2.179, 2.236)
    calls.clear()
    assert synth.measure_hidden_spread(7, starts=1, draws=2, release=0.25) == dict(  # no object: zeros, not NaN
        starts=1, draws=2, objects=0, pushed_objects=0, mean_px=0.0, pushed_mean_px=0.0, pushed_median_px=0.0,
        pushed_max_px=0.0)
    assert len(calls) == 2


# -- files: paths, generate, synth.json -------------------------------------------------------


def test_sequence_path_groups_256_per_folder(tmp_path):
    assert synth.sequence_path(tmp_path, "train", 0, 1) == tmp_path / "train" / "traj_0_to_0.tfrecords" / "0"
    assert synth.sequence_path(tmp_path, "test", 255, 600) == tmp_path / "test" / "traj_0_to_255.tfrecords" / "255"
    assert synth.sequence_path(tmp_path, "test", 256, 600) == tmp_path / "test" / "traj_256_to_511.tfrecords" / "0"
    assert synth.sequence_path(tmp_path, "test", 520, 600) == tmp_path / "test" / "traj_512_to_599.tfrecords" / "8"
    assert synth.sequence_path(tmp_path, "test", 511, 512) == tmp_path / "test" / "traj_256_to_511.tfrecords" / "255"


def test_write_one_simulates_and_writes_pngs_at_compression_level_3(tmp_path, monkeypatch):
    """Level 3 (faster than Pillow's default 6): the files are the bytes Pillow writes at 3."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, 64)[None, :, None] + np.linspace(0, 50, 64)[:, None, None]
    frames = np.clip(ramp + rng.integers(0, 12, (30, 64, 64, 3)), 0, 255).astype(np.uint8)
    episode = dict(frames=frames, actions=np.full((30, 4), 0.25, np.float32),
                   positions=np.full((30, 3), 0.5, np.float32), max_displacement=4.5)
    calls = []
    monkeypatch.setattr(synth, "simulate", lambda seed, split, index, hidden=False, release=0.0:
                        calls.append((seed, split, index, hidden, release)) or episode)
    assert synth._write_one((str(tmp_path), "test", 300, 600, 9, True, 0.5)) == 4.5
    assert calls == [(9, "test", 300, True, 0.5)]

    def png(frame, level):
        buf = io.BytesIO()
        Image.fromarray(frame, "RGB").save(buf, "PNG", compress_level=level)
        return buf.getvalue()

    assert len({png(frames[0], level) for level in (3, 4, 6)}) == 3  # the levels give different files
    seq = tmp_path / "test" / "traj_256_to_511.tfrecords" / "44"
    for t in (0, 29):
        assert (seq / f"{t}.png").read_bytes() == png(frames[t], 3)
    frames_back, conds = read_sequence(seq)
    np.testing.assert_array_equal(frames_back, frames)
    np.testing.assert_array_equal(conds, np.concatenate([episode["actions"], episode["positions"]], 1))


DETERMINISTIC_SPREAD = dict(starts=0, draws=0, objects=0, pushed_objects=0, mean_px=0.0, pushed_mean_px=0.0,
                            pushed_median_px=0.0, pushed_max_px=0.0)


def test_generate_writes_the_simulated_sequences_and_synth_json(tmp_path, capsys):
    dst = tmp_path / "d"
    info = synth.generate(dst, train=2, validate=1, test=1, seed=3, hidden=False)
    err = capsys.readouterr().err
    moved = []
    for split, n in (("train", 2), ("validate", 1), ("test", 1)):
        for i in range(n):
            ep = synth.simulate(3, split, i, hidden=False)
            moved.append(ep["max_displacement"])
            frames, conds = read_sequence(dst / split / f"traj_0_to_{n - 1}.tfrecords" / str(i))
            np.testing.assert_array_equal(frames, ep["frames"])
            np.testing.assert_array_equal(conds, np.concatenate([ep["actions"], ep["positions"]], 1))
    pushed = float(np.mean(np.array(moved) > 2.0))
    on_disk = json.loads((dst / "synth.json").read_text())
    assert on_disk == info and (dst / "synth.json").read_text() == json.dumps(info, indent=2) + "\n"
    assert info["params"] == dict(train=2, validate=1, test=1, seed=3, hidden_causes=False)
    assert info["generator"] == "vidpred.data.synth" and info["pushed_fraction"] == pushed
    assert info["push_threshold_px"] == 2.0 and info["hidden_causes"] is False
    assert info["action_convention"] == "action t is executed during step t and produces frame t"
    assert info["action_lag"] == 0 and info["workers"] == 1
    assert info["hidden_spread_px"] == DETERMINISTIC_SPREAD
    assert 0 <= info["seconds"] < 60 and info["seconds"] == round(info["seconds"], 2)
    assert set(info) == {"params", "generator", "pushed_fraction", "push_threshold_px", "hidden_causes",
                         "action_convention", "action_lag", "hidden_spread_px", "seconds", "workers"}
    line = err.strip()
    assert re.fullmatch(re.escape(f"{dst}: 4 sequences in ") + r"\d+\.\d s, objects pushed in "
                        + re.escape(f"{pushed:.0%}, deterministic world (no hidden causes)"), line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temp folder left


def test_generate_with_hidden_causes_records_the_spread(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(synth, "measure_hidden_spread",
                        lambda seed, release: calls.append((seed, release)) or dict(pushed_mean_px=4.25))
    info = synth.generate(tmp_path / "h", train=1, validate=1, test=1, seed=2)  # hidden causes on by default
    assert calls == [(2, 0.0)] and info["hidden_spread_px"] == dict(pushed_mean_px=4.25)
    assert "release" not in info["params"]  # absent at 0: a dataset of before is still "the same"
    assert info["hidden_causes"] is True and info["params"]["hidden_causes"] is True
    assert capsys.readouterr().err.strip().endswith("hidden causes spread pushed objects by 4.2 px")
    frames, _ = read_sequence(tmp_path / "h" / "train" / "traj_0_to_0.tfrecords" / "0")
    np.testing.assert_array_equal(frames, synth.simulate(2, "train", 0, hidden=True)["frames"])


def test_generate_is_idempotent_and_refuses_other_contents(tmp_path, capsys):
    dst = tmp_path / "d"
    info = synth.generate(dst, train=1, validate=1, test=1, hidden=False, quiet=True)
    assert capsys.readouterr().err == ""  # quiet: no bar, no summary
    assert synth.generate(dst, train=1, validate=1, test=1, hidden=False) == info
    assert capsys.readouterr().err.strip() == f"{dst}: synthetic dataset with these settings already exists; kept"
    assert synth.generate(dst, train=1, validate=1, test=1, hidden=False, quiet=True) == info
    assert capsys.readouterr().err == ""
    message = f"{dst}: already exists (expected a new path, or pass --force to replace it)"
    for other in (dict(train=2, validate=1, test=1, hidden=False), dict(train=1, validate=1, test=1, hidden=True),
                  dict(train=1, validate=1, test=1, seed=1, hidden=False)):
        with pytest.raises(DataError) as err:
            synth.generate(dst, quiet=True, **other)
        assert str(err.value) == message
    (dst / "synth.json").write_text("{broken")
    with pytest.raises(DataError) as err:
        synth.generate(dst, train=1, validate=1, test=1, hidden=False, quiet=True)
    assert str(err.value) == message
    (dst / "synth.json").unlink()
    with pytest.raises(DataError):
        synth.generate(dst, train=1, validate=1, test=1, hidden=False, quiet=True)
    new = synth.generate(dst, train=1, validate=1, test=1, seed=1, hidden=False, quiet=True, overwrite=True)
    assert new["params"]["seed"] == 1 and json.loads((dst / "synth.json").read_text())["params"]["seed"] == 1
    fresh = tmp_path / "a" / "b" / "c"  # parents are made, two folders deep
    synth.generate(fresh, train=1, validate=1, test=1, hidden=False, quiet=True)
    assert (fresh / "synth.json").is_file()


@pytest.mark.parametrize("bad,message", [
    (dict(train=0), "--train must be a positive integer, got 0"),
    (dict(validate=-1), "--validate must be a positive integer, got -1"),
    (dict(test=1.0), "--test must be a positive integer, got 1.0"),
])
def test_generate_rejects_bad_counts(tmp_path, bad, message):
    counts = {**dict(train=1, validate=1, test=1), **bad}
    with pytest.raises(ConfigError) as err:
        synth.generate(tmp_path / "x", quiet=True, hidden=False, **counts)
    assert str(err.value) == message and not (tmp_path / "x").exists()


def test_generate_with_two_workers_writes_the_same_files(tmp_path):
    one = synth.generate(tmp_path / "one", train=2, validate=1, test=1, hidden=False, quiet=True)
    two = synth.generate(tmp_path / "two", train=2, validate=1, test=1, hidden=False, quiet=True, workers=2)
    assert two["workers"] == 2 and two["pushed_fraction"] == one["pushed_fraction"]
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    assert len(files) == 4 * 30
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes()
    with pytest.raises(ConfigError):
        synth.generate(tmp_path / "z", train=1, validate=1, test=1, workers=0, quiet=True)


def test_read_info_and_check_action_lag(tmp_path):
    assert synth.read_info(tmp_path) is None
    synth.check_action_lag(tmp_path, 1)  # nothing recorded: nothing to check
    for text in ("[1, 2]", '{"params": 3}', "{}"):
        (tmp_path / "synth.json").write_text(text)
        with pytest.raises(DataError) as err:
            synth.read_info(tmp_path)
        assert str(err.value) == f"{tmp_path / 'synth.json'}: not a vidpred synthetic dataset description (no 'params')"
    (tmp_path / "synth.json").write_text(json.dumps({"params": {}}))  # written before action_lag existed
    assert synth.read_info(tmp_path) == {"params": {}}
    synth.check_action_lag(tmp_path, 0)
    with pytest.raises(ConfigError) as err:
        synth.check_action_lag(tmp_path, 1)
    assert str(err.value) == (f"model.action_lag=1 but {tmp_path / 'synth.json'} records action_lag 0 "
                              "(action t is executed during step t and produces frame t); set model.action_lag=0")
    (tmp_path / "synth.json").write_text(json.dumps({"params": {}, "action_lag": 1, "action_convention": "later"}))
    synth.check_action_lag(tmp_path, 1)
    with pytest.raises(ConfigError) as err:
        synth.check_action_lag(tmp_path, 0)
    assert str(err.value) == (f"model.action_lag=0 but {tmp_path / 'synth.json'} records action_lag 1 (later); "
                              "set model.action_lag=1")


def test_measure_push_fraction_counts_sequences_past_the_threshold():
    moved = [synth.simulate(1, "train", i, hidden=False)["max_displacement"] for i in range(4)]
    assert synth.measure_push_fraction(4, seed=1) == np.mean(np.array(moved) > 2.0)
    moved_h = [synth.simulate(1, "train", i, hidden=True)["max_displacement"] for i in range(4)]
    assert synth.measure_push_fraction(4, seed=1, hidden=True) == np.mean(np.array(moved_h) > 2.0)


class Interrupt(BaseException):
    pass


class SerialPools:
    """``synth.get_context`` whose pools record their size and run ``imap`` in this process."""

    def __init__(self):
        self.sizes = []

    def __call__(self, *args, **kwargs):
        sizes = self.sizes

        class Pool:
            def __init__(self, processes):
                sizes.append(processes)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def imap(self, fn, tasks, chunksize=1):
                return map(fn, tasks)

        return SimpleNamespace(Pool=Pool)


MADE_UP = {("train", 0): 2.0, ("train", 1): 2.5, ("validate", 0): 0.0, ("test", 0): 7.0}  # px; 2.0 is no push


def made_up_write(task):
    """``_write_one`` without simulating or writing: the displacement of MADE_UP."""
    return MADE_UP[task[1], task[2]]


def test_generate_draws_its_bar_on_a_terminal_and_reports_time_and_pushes(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "_write_one", made_up_write)
    clock = iter([100.0, 103.14159])
    monkeypatch.setattr(synth, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    err = Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    dst = tmp_path / "d"
    info = synth.generate(dst, train=2, validate=1, test=1, seed=3, hidden=False)
    assert info["seconds"] == 3.14 and info["pushed_fraction"] == 0.5 and info["workers"] == 1
    assert (dst / "synth.json").read_text() == json.dumps(info, indent=2) + "\n"
    summary = f"{dst}: 4 sequences in 3.1 s, objects pushed in 50%, deterministic world (no hidden causes)\n"
    bar = last_bar_before(err.getvalue(), summary)
    assert re.fullmatch(r"synth: 100%\|.*\| 4/4 \[[^]]*, ([\d.?]+seq/s|[\d.]+s/seq)\]\n", bar), repr(bar)
    err.truncate(0)
    err.seek(0)
    clock = iter([0.0, 1.0])
    synth.generate(tmp_path / "q", train=2, validate=1, test=1, hidden=False, quiet=True)
    assert err.getvalue() == ""


def test_generate_starts_a_pool_only_for_more_than_one_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "_write_one", made_up_write)
    pools = SerialPools()
    monkeypatch.setattr(synth, "get_context", pools)
    for name, workers in (("default", None), ("one", 1), ("two", 2), ("three", 3)):
        extra = {} if workers is None else dict(workers=workers)
        info = synth.generate(tmp_path / name, train=2, validate=1, test=1, hidden=False, quiet=True, **extra)
        assert info["workers"] == (workers or 1) and info["pushed_fraction"] == 0.5
    assert pools.sizes == [2, 3]


def test_generate_builds_in_a_temp_folder_beside_a_deep_destination_and_cleans_up(tmp_path, monkeypatch):
    dst = tmp_path / "x" / "y" / "d"  # neither x nor y exists yet
    seen = []

    def spy(task):
        seen.append((Path(task[0]), sorted(p.name for p in dst.parent.iterdir())))
        return 0.0

    monkeypatch.setattr(synth, "_write_one", spy)
    synth.generate(dst, train=2, validate=1, test=1, hidden=False, quiet=True)
    tmp = seen[0][0]
    assert tmp.parent == dst.parent and tmp.name.startswith("d.tmp-"), tmp
    assert seen == [(tmp, [tmp.name])] * 4  # one temp folder for all four sequences, and nothing else there
    assert sorted(p.name for p in dst.parent.iterdir()) == ["d"] and (dst / "synth.json").is_file()
    fail = tmp_path / "f" / "g" / "d"
    calls = []

    def interrupted(task):
        calls.append(Path(task[0]))
        if len(calls) == 2:
            raise Interrupt
        return 0.0

    monkeypatch.setattr(synth, "_write_one", interrupted)
    with pytest.raises(Interrupt):
        synth.generate(fail, train=2, validate=1, test=1, hidden=False, quiet=True)
    assert calls[0].parent == fail.parent and list(fail.parent.iterdir()) == []  # the temp folder removed


def test_an_interrupt_after_the_swap_is_the_error_raised(tmp_path, monkeypatch):
    """The temp folder is gone once renamed; removing it again must not replace the error."""
    monkeypatch.setattr(synth, "_write_one", made_up_write)
    real = synth.replace_dir

    def swap_then_interrupt(new, target):
        real(new, target)
        raise Interrupt

    monkeypatch.setattr(synth, "replace_dir", swap_then_interrupt)
    dst = tmp_path / "d"
    with pytest.raises(Interrupt):
        synth.generate(dst, train=2, validate=1, test=1, hidden=False, quiet=True)
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and (dst / "synth.json").is_file()


def test_measure_push_fraction_defaults_and_threshold(monkeypatch):
    """200 train sequences of seed 0 without hidden causes by default; a sequence counts when its
    largest displacement is more than 2 px (2.0 exactly does not)."""
    calls = []

    def simulate(seed, split, index, hidden=False):  # simulate's default
        calls.append((seed, split, index, hidden))
        return dict(max_displacement=(2.0, 2.5, 0.0, 9.0)[index % 4])

    monkeypatch.setattr(synth, "simulate", simulate)
    assert synth.measure_push_fraction() == 0.5
    assert calls == [(0, "train", i, False) for i in range(200)]
    calls.clear()
    assert synth.measure_push_fraction(4, seed=5, hidden=True) == 0.5
    assert calls == [(5, "train", i, True) for i in range(4)]
