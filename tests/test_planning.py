"""vidpred plan: the task environment, the colour-centroid cost, CEM, the three arms, the JSON, errors."""

import json
import re

import numpy as np
import pytest
import torch

from vidpred.cli import main
from vidpred.config import load_config
from vidpred.data import synth
from vidpred.planning import cem as cem_mod
from vidpred.planning import env as env_mod
from vidpred.errors import ConfigError
from vidpred.planning.cost import ModelPredictor, SimulatorPredictor, colour_centroid, colour_track, frame_to_tensor
from vidpred.planning.mpc import run_episode

TINY = ["model.width=8", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16", "model.cond_embed=8",
        "train.batch_size=2", "train.steps_per_epoch=2", "train.epochs=1", "train.n_future=3",
        "train.log_every=1", "train.device=cpu"]
SMALL = ["--episodes", "2", "--steps", "3", "--samples", "4", "--iterations", "1", "--horizon", "3", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Planning runs many small rollouts: on 2 busy cores two torch threads wait on each
    other (measured ~10x slower than one), so this file runs on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_tiny(root, out, extra=()):
    from vidpred.training.trainer import train

    cfg = load_config("synth-cpu", [f"data.root={root}", *TINY, *extra])  # causal, action_lag 0
    train(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def run(synth_root, tmp_path_factory):
    return train_tiny(synth_root, tmp_path_factory.mktemp("plan") / "run")


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vidpred: error: ")
    return err


def test_plan_split_keeps_the_dataset_ids():
    assert synth.SPLIT_IDS == {"train": 0, "validate": 1, "test": 2, "plan": 3}


def test_tasks_and_env_are_deterministic_for_a_seed():
    tasks = env_mod.find_tasks(0, 3)
    assert tasks == env_mod.find_tasks(0, 3) and tasks != env_mod.find_tasks(1, 3)
    actions = [np.array([0.02, -0.01, 0.0, 1.0]), np.array([-0.03, 0.04, 0.0, 1.0])] * 3
    for task in tasks:
        lo, hi = env_mod.GOAL_DISTANCE_PX
        assert lo <= np.linalg.norm(np.subtract(task.goal, task.start)) <= hi
        a, b = env_mod.PushEnv(task), env_mod.PushEnv(task)
        assert len(a.frames) == len(a.actions) == len(a.positions) == env_mod.N_PAST and a.steps_taken == 0
        assert np.allclose(a.object_position(), task.start)
        for act in actions:
            fa, fb = a.step(act), b.step(act)
            assert fa.shape == (64, 64, 3) and fa.dtype == np.uint8 and np.array_equal(fa, fb)
        assert np.array_equal(a.object_positions(), b.object_positions())
        assert np.array_equal(a.effector_position(), b.effector_position())
        assert a.distance() == b.distance() and a.steps_taken == len(actions)
        before = [f.copy() for f in a.frames]
        a.reset()  # back to the start: the same frames again
        for act in actions:
            a.step(act)
        assert all(np.array_equal(x, y) for x, y in zip(before, a.frames))


def test_colour_centroid_finds_the_object_within_a_pixel():
    for task in env_mod.find_tasks(0, 8):
        env = env_mod.PushEnv(task)
        world = env.episode.world
        # the arm starts next to the object and may cover some of it: draw it in the farthest corner
        corners = np.array([[10.0, 10.0], [54.0, 10.0], [10.0, 54.0], [54.0, 54.0]])
        far = corners[np.argmax(np.linalg.norm(corners - env.object_position(), axis=1))]
        world.eff.position = world.target.position = tuple(far)
        frame = frame_to_tensor(env.render())
        xy = colour_centroid(frame, torch.tensor(task.colour) / 255.0).numpy()
        assert np.linalg.norm(xy - env.object_position()) < 1.0
    # the arm, the table and the walls do not pull it: a frame without the colour gives the prior
    grey = torch.full((3, 64, 64), 0.5)
    assert torch.isnan(colour_centroid(grey, torch.tensor([0.9, 0.1, 0.1]))).all()
    prior = colour_centroid(grey, torch.tensor([0.9, 0.1, 0.1]), prior_xy=(10.0, 20.0))
    assert torch.allclose(prior, torch.tensor([10.0, 20.0]))


def test_colour_track_keeps_a_fading_object_where_it_was_last_seen():
    """A real push, rendered: while the object is drawn the tracked position is its centroid; when
    later frames lose its colour (a prediction that smears it), the tracked position stays where
    the last frame that showed it put it, where the last frame alone falls back to the start."""
    task = env_mod.find_tasks(0, 1)[0]
    env = env_mod.PushEnv(task)
    start = env.object_position()
    push = np.subtract(task.goal, task.start) / np.linalg.norm(np.subtract(task.goal, task.start))
    frames = []
    for _ in range(8):
        env.step(np.array([*(2.5 / 64 * push), 0.0, env.gripper]))
        frames.append(frame_to_tensor(env.render()))
    moved = env.object_position()
    assert np.linalg.norm(moved - start) > 3  # the push carried the object
    colour = torch.tensor(task.colour) / 255.0
    frames = torch.stack(frames)  # (8, 3, 64, 64)
    sharp = colour_track(frames, colour, start)
    assert np.linalg.norm(sharp.numpy() - colour_centroid(frames[-1], colour).numpy()) < 0.3
    assert np.linalg.norm(sharp.numpy() - moved) < 1.5
    faded = frames.clone()
    faded[6:] = 0.5 * faded[6:] + 0.25  # frames 7-8: the object's colour is gone
    assert colour_weights_sum(faded[6:], colour) == 0
    seen = colour_centroid(frames[5], colour).numpy()
    tracked = colour_track(faded, colour, start).numpy()
    assert np.linalg.norm(tracked - seen) < 0.3 and np.linalg.norm(tracked - start) > 2
    assert np.allclose(colour_centroid(faded[-1], colour, prior_xy=start).numpy(), start)
    # batched: leading dimensions are kept, each sequence tracked on its own
    both = colour_track(torch.stack([frames, faded]), colour, start)
    assert both.shape == (2, 2) and torch.allclose(both[1], torch.as_tensor(tracked))
    # the path: every frame's tracked position, the last one the track's end; the faded frames keep
    # frame 6's position
    path = colour_track(torch.stack([frames, faded]), colour, start, path=True)
    assert path.shape == (2, 8, 2) and torch.equal(path[:, -1], both)
    assert torch.allclose(path[1, 5:], path[1, 5].expand(3, 2), atol=0.3)
    for t in (0, 3):  # a prefix of the frames tracks to the path's entry
        assert torch.equal(path[0, t], colour_track(frames[: t + 1], colour, start))


def colour_weights_sum(frames, colour) -> float:
    from vidpred.planning.cost import colour_weights

    return float(colour_weights(frames, colour).sum())


def test_cem_is_generic_over_the_cost():
    """A toy cost with a known optimum: the arm's summed moves should reach a target."""
    cfg = cem_mod.CEMConfig(samples=64, iterations=4, horizon=5, move_cost=0.0)
    target = np.array([0.1, -0.05])  # reachable: 5 steps of at most 3/64

    def predict(actions):
        assert actions.shape == (64, 5, 4) and np.all(actions[..., 2:] == (0.0, 1.0))
        assert (np.linalg.norm(actions[..., :2], axis=-1) <= cfg.action_limit + 1e-12).all()
        return np.linalg.norm(actions[..., :2].sum(1) - target, axis=-1)

    plan = cem_mod.CEM(cfg, np.random.default_rng(0)).plan(predict, (0.0, 1.0))
    assert plan.actions.shape == (5, 4) and plan.cost < 0.01
    assert plan.best_per_iteration[-1] <= plan.best_per_iteration[0]
    assert cfg.elites == 3  # 5% of 64, rounded


def test_cem_can_stay_still_and_prefers_short_moves():
    """The zero-motion sequence is scored in every iteration, so where staying is best CEM finds
    it exactly; with a move cost, of equally good sequences the one that moves least wins."""
    def stay(actions):  # the arm's summed move: staying is the optimum, 0
        return np.linalg.norm(actions[..., :2].sum(1), axis=-1) * 64

    for still in (True, False):
        cfg = cem_mod.CEMConfig(samples=16, iterations=2, horizon=4, still=still, move_cost=0.0)
        plan = cem_mod.CEM(cfg, np.random.default_rng(0)).plan(stay, (0.0, 1.0))
        assert (plan.cost == 0.0 and not plan.actions[:, :2].any()) if still else plan.cost > 0.05
    flat = lambda actions: np.zeros(len(actions))  # noqa: E731  every sequence equally good
    travel = lambda a: np.linalg.norm(a[:, :2], axis=-1).sum() * 64  # noqa: E731  px
    cfg = cem_mod.CEMConfig(samples=16, iterations=1, horizon=4, still=False, move_cost=0.1)
    plan = cem_mod.CEM(cfg, np.random.default_rng(0)).plan(flat, (0.0, 1.0))
    noise = cem_mod.correlated_noise(np.random.default_rng(0), (16, 4, 2), cfg.correlation)  # CEM's own draws
    others = [travel(a) for a in cem_mod.full_actions(cem_mod.clip_moves(cfg.init_std * noise, cfg.action_limit),
                                                      (0.0, 1.0))]
    assert plan.cost == pytest.approx(0.1 * travel(plan.actions)) and travel(plan.actions) <= min(others) + 1e-9
    for bad in (-1.0, float("nan"), float("inf"), 1e308):
        with pytest.raises(ConfigError, match=r"--move-cost must be a number in \[0, 1000\], got"):
            cem_mod.CEMConfig(move_cost=bad)
    with pytest.raises(ConfigError, match="--samples must be >= 3 with --still"):
        cem_mod.CEMConfig(samples=2)
    assert cem_mod.CEMConfig(samples=2, still=False).samples == 2


def test_cem_keeps_every_step_within_max_step():
    """--max-step: every sequence scored and the plan move the arm at most that far per step, the
    random arm too; outside (0, 3] px it is refused."""
    cfg = cem_mod.CEMConfig(samples=16, iterations=2, horizon=4, action_limit=1.5 / 64, move_cost=0.0)
    seen = []

    def far(actions):  # the farther the better: pushes every step against the limit
        seen.append(np.linalg.norm(actions[..., :2], axis=-1) * 64)
        return -np.linalg.norm(actions[..., :2].sum(1), axis=-1)

    plan = cem_mod.CEM(cfg, np.random.default_rng(0)).plan(far, (0.0, 1.0))
    assert max(s.max() for s in seen) <= 1.5 + 1e-9
    assert np.linalg.norm(plan.actions[:, :2], axis=-1).max() * 64 == pytest.approx(1.5)  # it uses the limit
    rand = cem_mod.random_actions(np.random.default_rng(0), 20, cfg, (0.0, 1.0))
    assert np.linalg.norm(rand[:, :2], axis=-1).max() * 64 <= 1.5 + 1e-9
    assert cfg.as_dict()["action_limit_px"] == 1.5
    for bad in (0.0, -1.0, 3.5, float("nan")):
        with pytest.raises(ConfigError, match=r"--max-step must be > 0 and <= 3 px .* got"):
            cem_mod.CEMConfig(action_limit=bad / 64)


def test_cem_executes_the_best_sequence_or_the_elite_mean():
    """``execute="mean"`` returns the mean of the last iteration's elites (what the warm start
    shifts), ``best`` the lowest-cost sequence; both plans are kept on the Plan either way."""
    target = np.array([0.1, -0.05])

    def predict(actions):
        return np.linalg.norm(actions[..., :2].sum(1) - target, axis=-1)

    plans = {}
    for execute in ("best", "mean"):
        cfg = cem_mod.CEMConfig(samples=32, iterations=3, horizon=5, move_cost=0.0, execute=execute)
        cem = cem_mod.CEM(cfg, np.random.default_rng(0))
        plans[execute] = plan = cem.plan(predict, (0.0, 1.0))
        np.testing.assert_allclose(plan.mean[:, :2], cem._final_mean, rtol=1e-12)  # on the disc already here
        assert plan.actions is (plan.best if execute == "best" else plan.mean)
        assert np.all(plan.mean[:, 2:] == (0.0, 1.0))
    # the same draws either way: the same best and mean sequences, only the executed one differs
    np.testing.assert_array_equal(plans["best"].best, plans["mean"].best)
    np.testing.assert_array_equal(plans["best"].mean, plans["mean"].mean)
    assert not np.array_equal(plans["best"].best, plans["best"].mean)
    assert predict(plans["mean"].mean[None])[0] < 0.02  # the elites' mean is near the optimum too
    with pytest.raises(ConfigError, match="--execute must be one of best, mean, got 'median'"):
        cem_mod.CEMConfig(execute="median")


def test_a_closed_loop_episode_executes_the_elite_mean(monkeypatch):
    """With ``execute="mean"`` an episode executes the first step of each plan's elite mean."""
    plans = []
    real = cem_mod.CEM.plan

    def spy(self, predict, fixed):
        plans.append(real(self, predict, fixed))
        return plans[-1]

    monkeypatch.setattr(cem_mod.CEM, "plan", spy)
    task = env_mod.find_tasks(0, 1)[0]
    cfg = cem_mod.CEMConfig(samples=8, iterations=2, horizon=3, execute="mean")
    record = run_episode(task, "simulator", cfg, 3, 0, env_mod.N_PAST)
    assert len(plans) == 3 == len(record["actions"])
    for plan, executed in zip(plans, record["actions"]):
        np.testing.assert_allclose(executed, plan.mean[0], atol=1e-6)  # the record rounds to 6 decimals
        assert plan.actions is plan.mean
    assert any(not np.allclose(p.best[0], p.mean[0]) for p in plans)  # so the check tells them apart


def test_simulator_arm_solves_easy_tasks():
    cfg = cem_mod.CEMConfig(samples=24, iterations=2, horizon=6)
    records = [run_episode(t, "simulator", cfg, 14, 0, env_mod.N_PAST) for t in env_mod.find_tasks(0, 4)]
    assert sum(r["success"] for r in records) >= 3
    assert all(r["final_distance_px"] < r["start_distance_px"] for r in records)


def test_model_conditions_follow_the_step_convention(run):
    from vidpred.training.checkpoint import load_model

    model, _, _ = load_model(run)
    task = env_mod.find_tasks(0, 1)[0]
    env = env_mod.PushEnv(task)
    env.step(np.array([0.01, 0.02, 0.0, env.gripper]))
    pred = ModelPredictor(model, task, n_past=2)
    pred.bind(env)
    cand = np.stack([np.full((3, 4), k, float) for k in (0.5, 0.7)])  # (N=2, H=3, 4)
    c = pred.conditions(cand).numpy()  # (2, 5, 7)
    assert c.shape == (2, 5, 7)
    # action_lag 0: rows 0-1 are the actions that produced the two observed frames, then the candidates
    np.testing.assert_allclose(c[:, :2, :4], np.stack(env.actions[-2:])[None].repeat(2, 0), rtol=1e-6)
    np.testing.assert_allclose(c[:, 2:, :4], cand, rtol=1e-6)
    np.testing.assert_allclose(c[:, :2, 4:], np.stack(env.positions[-2:])[None].repeat(2, 0), rtol=1e-6)
    np.testing.assert_allclose(c[:, 2:, 4:], np.broadcast_to(env.positions[-1], (2, 3, 3)), rtol=1e-6)
    model.cfg.action_lag = 1  # row j holds the action that produces frame j + 1
    try:
        c = pred.conditions(cand).numpy()
    finally:
        model.cfg.action_lag = 0
    np.testing.assert_allclose(c[:, 0, :4], np.repeat(env.actions[-1][None], 2, 0), rtol=1e-6)
    np.testing.assert_allclose(c[:, 1:4, :4], cand, rtol=1e-6)
    assert (c[:, 4, :3] == 0).all()  # beyond the candidates: zero motion
    # costs: one per candidate, finite, in px; with several prior samples each, averaged
    still = np.zeros((5, 4, 4)) + np.array([0.0, 0.0, 0.0, env.gripper])
    assert pred(still).shape == (5,) and np.isfinite(pred(still)).all()
    two = ModelPredictor(model, task, n_past=2, model_samples=2)
    two.bind(env)
    assert two.imagine(still[:3]).shape == (3, 2, 4, 3, 64, 64) and two(still).shape == (5,)
    # the two readings of the object's position score the same imagined frames
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    tracked = ModelPredictor(model, task, n_past=2, generator=gen())
    final = ModelPredictor(model, task, n_past=2, generator=gen(), cost="final")
    tracked.bind(env), final.bind(env)
    future = ModelPredictor(model, task, n_past=2, generator=gen())
    future.bind(env)
    future = future.imagine(still)[:, 0]  # (5, 4, 3, 64, 64)
    goal = torch.tensor(task.goal, dtype=torch.float32)
    np.testing.assert_allclose(tracked(still), (colour_track(future, tracked.colour, tracked.prior_xy) - goal)
                               .norm(dim=-1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(final(still), (colour_centroid(future[:, -1], final.colour, prior_xy=final.prior_xy)
                                              - goal).norm(dim=-1).numpy(), rtol=1e-5)
    with pytest.raises(ConfigError, match="--cost must be one of tracked, final, got 'centre'"):
        ModelPredictor(model, task, n_past=2, cost="centre")


def test_simulator_predictor_matches_the_executed_future():
    task = env_mod.find_tasks(0, 1)[0]
    env = env_mod.PushEnv(task)
    sim = SimulatorPredictor(task)
    sim.bind(env)
    push = np.subtract(task.goal, task.start) / np.linalg.norm(np.subtract(task.goal, task.start))
    plan = np.array([[*(2.5 / 64 * push), 0.0, env.gripper]] * 8)
    predicted = sim(np.stack([plan, plan * 0]))
    assert predicted[1] == pytest.approx(env.distance())  # standing still moves nothing
    for a in plan:
        env.step(a)
    assert env.distance() < task.as_dict()["start_distance_px"] - 1  # the push moved the object
    assert predicted[0] == pytest.approx(env.distance(), abs=0.5)  # a snapshot loses contact caches only


def test_plan_json_has_the_three_arms_and_is_reproducible(run, tmp_path, capsys):
    out1, out2, gifs = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "gif"
    assert main(["plan", str(run), *SMALL, "--seed", "3", "--out", str(out1), "--gif", str(gifs)]) == 0
    printed = capsys.readouterr().out
    assert str(out1) in printed and "simulator" in printed
    header = next(line for line in printed.splitlines() if line.startswith("arm"))
    assert header.split() == ["arm", "success", "reached", "final", "px", "s/step"]
    assert main(["plan", str(run), *SMALL, "--seed", "3", "--out", str(out2)]) == 0
    a, b = json.loads(out1.read_text()), json.loads(out2.read_text())
    assert a["episodes"] == 2 and a["seed"] == 3 and a["steps"] == 3
    assert a["success_radius_px"] == env_mod.SUCCESS_RADIUS_PX
    assert a["planner"]["samples"] == 4 and a["planner"]["iterations"] == 1 and a["planner"]["horizon"] == 3
    assert a["planner"]["cost"] == "tracked" and "followed through the predicted frames" in a["cost"]
    assert a["planner"]["still"] is True and a["planner"]["move_cost"] == 0.2
    assert len(a["tasks"]) == 2
    for arm in ("model", "random", "simulator"):
        r = a[arm]
        assert 0.0 <= r["success_rate"] <= 1.0 and r["final_distance_px"] >= 0 and r["seconds_per_step"] >= 0
        assert len(r["episodes"]) == 2 and all(e["steps"] == 3 and len(e["actions"]) == 3 for e in r["episodes"])
        assert r["success_rate"] == np.mean([e["success"] for e in r["episodes"]])
        for e in r["episodes"]:  # the true distance before the first planned step and after each
            assert len(e["distances_px"]) == 4 and e["distances_px"][-1] == pytest.approx(e["final_distance_px"])
            assert e["distances_px"][0] == pytest.approx(e["start_distance_px"], abs=0.01)
        assert r["reached_rate"] == np.mean([min(e["distances_px"][1:]) <= a["success_radius_px"]
                                             for e in r["episodes"]])
        assert r["reached_rate"] >= r["success_rate"]
        assert r["final_distance_px"] == pytest.approx(np.mean([e["final_distance_px"] for e in r["episodes"]]),
                                                        abs=1e-3)

    def numbers(result):  # everything but the timings
        drop = {"seconds_per_step", "planning_seconds"}
        return {arm: [{k: v for k, v in e.items() if k not in drop} for e in result[arm]["episodes"]]
                for arm in ("model", "random", "simulator")}

    assert numbers(a) == numbers(b)  # --gif draws its own noise: it changes no result
    assert sorted(p.name for p in gifs.iterdir()) == sorted(
        f"episode_{i:03d}_task{t['index']}{s}.gif" for i, t in enumerate(a["tasks"]) for s in ("", "_first_plan"))
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
    # a subset of the arms
    out3 = tmp_path / "c.json"
    assert main(["plan", str(run), *SMALL, "--seed", "3", "--arms", "random", "--cost", "final", "--no-still",
                 "--move-cost", "0.2", "--execute", "mean", "--out", str(out3)]) == 0
    c = json.loads(out3.read_text())
    assert c["arms"] == ["random"] and "model" not in c and "simulator" not in c
    assert c["planner"]["cost"] == "final" and "in the last predicted frame" in c["cost"]
    assert c["planner"]["still"] is False and c["planner"]["move_cost"] == 0.2  # the flags reach the planner
    assert c["planner"]["execute"] == "mean"
    assert numbers(c | {"model": a["model"], "simulator": a["simulator"]}) == numbers(a)  # arms keep their draws
    # --max-step reaches the planner and every executed step of every arm (in px: 1.5 of 64)
    out4 = tmp_path / "d.json"
    assert main(["plan", str(run), *SMALL, "--seed", "3", "--max-step", "1.5", "--out", str(out4)]) == 0
    d = json.loads(out4.read_text())
    assert d["planner"]["action_limit_px"] == 1.5
    steps = {arm: np.linalg.norm([e[:2] for ep in d[arm]["episodes"] for e in ep["actions"]], axis=1) * 64
             for arm in ("model", "random", "simulator")}
    assert all(v.max() <= 1.5 + 1e-4 for v in steps.values())  # actions are recorded to 6 decimals
    assert steps["random"].max() > 1.4  # the random arm's 2 px noise meets the limit


def test_a_stopped_plan_resumes_from_its_finished_episodes(run, tmp_path, capsys, monkeypatch):
    from vidpred.planning import mpc

    ref, out = tmp_path / "ref.json", tmp_path / "out.json"
    assert main(["plan", str(run), *SMALL, "--seed", "5", "--out", str(ref)]) == 0
    assert not mpc.episode_log_path(ref).exists()  # removed once the JSON is written
    capsys.readouterr()
    real, calls, stop_at = mpc.run_episode, [], []

    def counted(*args, **kwargs):
        calls.append(args[1])
        if len(calls) in stop_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    def plan(*extra, stop=None):
        calls.clear()
        stop_at[:] = [] if stop is None else [stop]
        return main(["plan", str(run), *SMALL, "--seed", "5", "--out", str(out), *extra])

    monkeypatch.setattr(mpc, "run_episode", counted)
    log = mpc.episode_log_path(out)
    assert plan(stop=3) == 130
    assert str(log) in capsys.readouterr().err and not out.exists()
    assert len(log.read_text().splitlines()) == 1 + 2  # the settings, then the two finished episodes
    with log.open("a") as f:
        f.write('{"arm": "random", "episo')  # a line cut short by a kill: dropped, not appended to
    assert plan(stop=2) == 130  # the second call runs one more episode, then is stopped too
    assert "2 of 6 episodes already done" in capsys.readouterr().err
    assert len(log.read_text().splitlines()) == 1 + 3 and all(json.loads(x) for x in log.read_text().splitlines())
    assert plan() == 0
    assert "3 of 6 episodes already done" in capsys.readouterr().err
    assert len(calls) == 3  # only the episodes that had not finished ran
    a, b = json.loads(ref.read_text()), json.loads(out.read_text())
    drop = {"seconds_per_step", "planning_seconds"}
    for arm in ("model", "random", "simulator"):
        assert [{k: v for k, v in e.items() if k not in drop} for e in a[arm]["episodes"]] == \
            [{k: v for k, v in e.items() if k not in drop} for e in b[arm]["episodes"]]
        assert a[arm]["success_rate"] == b[arm]["success_rate"]
    assert not log.exists()
    # a log of a call with other settings is not used: another seed, GIFs, another checkpoint's bytes
    real_sha = mpc.file_sha256
    for extra, patch in ((("--seed", "6"), None), (("--gif", str(tmp_path / "gif")), None), ((), "sha")):
        assert plan(stop=3) == 130
        capsys.readouterr()
        if patch:
            monkeypatch.setattr(mpc, "file_sha256", lambda path: "0" * 64)
        assert plan(*extra, "--arms", "random") == 0
        err = capsys.readouterr().err
        assert "not an episode log of a call with these settings; starting over" in err, extra
        assert "already done" not in err and len(calls) == 2
        monkeypatch.setattr(mpc, "file_sha256", real_sha)
    # a file that is not a log is started over; a folder in its place is a one-line error
    log.write_bytes(b"\x80\x81 not text\n{}\n")
    assert plan("--arms", "random") == 0 and "starting over" in capsys.readouterr().err
    log.mkdir()
    assert plan("--arms", "random") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidpred: error: ") and "episode log" in err and len(err.splitlines()) == 1


def test_the_pushed_object_benchmark_reads_both_costs(run, synth_root, capsys, monkeypatch, load_benchmark):
    bench = load_benchmark("pushed_object")
    monkeypatch.setattr("sys.argv", ["pushed_object.py", str(run), str(synth_root), "--samples", "2",
                                     "--min-push", "0.05"])
    bench.main()
    out = capsys.readouterr().out.splitlines()
    assert "test sequences with an object pushed >= 0.05 px" in out[0]
    for line, name in zip(out[1:], ("final", "tracked")):
        numbers = [float(x) for x in re.findall(r"-?\d+\.\d+", line)]
        assert line.split()[0] == name and len(numbers) == 3 and all(np.isfinite(numbers)) and numbers[0] >= 0
    monkeypatch.setattr("sys.argv", ["pushed_object.py", str(run), str(synth_root), "--min-push", "0"])
    with pytest.raises(SystemExit, match="--min-push must be > 0 px, got 0.0"):
        bench.main()


def test_the_open_loop_benchmark_scores_each_variant(run, capsys, monkeypatch, load_benchmark):
    from vidpred.training.checkpoint import load_model

    bench = load_benchmark("plan_open_loop")
    task = env_mod.find_tasks(0, 1)[0]
    cfg = cem_mod.CEMConfig(samples=8, iterations=1, move_cost=0.05)  # at 0.2 one of 8 samples may not beat staying
    sim = bench.open_loop(None, task, "sim", "best", cfg, 0, 2)
    assert sim < task.as_dict()["start_distance_px"] - 2  # the simulator's one plan pushes the object on
    model = load_model(run)[0]
    assert 0 <= bench.open_loop(model, task, "tracked", "mean", cfg, 0, 2) < np.inf
    # an ensemble of a model with itself: each member draws the same noise, so the averaged cost is the
    # model's own and CEM picks the same plan
    assert bench.open_loop(model, task, "ensemble", "best", cfg, 0, 2, (model,)) == \
        bench.open_loop(model, task, "tracked", "best", cfg, 0, 2)

    class Member:  # a stand-in predictor: cost = scale * the first step's dx
        def __init__(self, scale):
            self.scale, self.bound = scale, None

        def bind(self, env):
            self.bound = env

        def __call__(self, actions):
            return self.scale * actions[:, 0, 0]

    members = [Member(1.0), Member(3.0)]
    ensemble = bench.Ensemble(members)
    ensemble.bind("env")
    assert [m.bound for m in members] == ["env", "env"]
    np.testing.assert_allclose(ensemble(np.array([[[1.0, 0, 0, 0]], [[-0.5, 0, 0, 0]]])), [2.0, -1.0])
    monkeypatch.setattr("sys.argv", ["plan_open_loop.py", str(run), "--tasks", "1", "--variants", "sim:best",
                                     "tracked:mean"])
    bench.main()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"task {task.index}: sim:best ") and "tracked:mean" in out[0]
    assert out[1].split()[:3] == ["sim:best", "success", "100%"] and out[2].startswith("tracked:mean")
    for argv in (["--variants", "sim:worst"], ["--tasks", "0"], ["--move-cost", "-1"],
                 ["--variants", "ensemble:best"], ["--ensemble", str(run)]):
        monkeypatch.setattr("sys.argv", ["plan_open_loop.py", str(run), *argv])
        with pytest.raises(SystemExit, match="--variants|--tasks|--move-cost|--ensemble"):
            bench.main()


def test_the_plan_step_benchmark_splits_a_rollout_into_the_models_parts(run, capsys, monkeypatch, load_benchmark):
    bench = load_benchmark("plan_step")
    monkeypatch.setattr("sys.argv", ["plan_step.py", str(run), "--samples", "3", "--iterations", "1", "--horizon", "2",
                                     "--repeat", "2", "--threads", "1"])
    bench.main()
    out = capsys.readouterr().out.splitlines()
    assert "3 samples x 1 iterations, horizon 2, 1 threads" in out[0]
    assert [line.split(" s ")[0].rsplit(None, 1)[0] for line in out[1:4]] == [
        "one plan", "one iteration's rollouts", "its cost (tracked colour centroid)"]
    assert all("2 runs" in line for line in out[1:4])
    total = float(re.search(r"\((\d+\.\d+) s\)", out[4]).group(1))
    parts = {line.split()[0]: float(line.split()[1]) for line in out[5:-1]}
    assert {"encoder", "decoder", "predictor", "prior"} <= parts.keys() and all(v >= 0 for v in parts.values())
    rest = float(out[-1].split()[2])
    assert out[-1].split()[:2] == ["the", "rest"] and rest >= 0
    assert sum(parts.values()) + rest == pytest.approx(total, abs=5e-4 * (len(parts) + 2))  # each printed to the ms
    # the timing wrappers are gone: the parts run their classes' methods again
    from vidpred.training.checkpoint import load_model

    model = load_model(run)[0]
    spent = bench.part_times(model, lambda: model.decoder.forward)
    assert spent == {} and "forward" not in vars(model.decoder) and "forward" not in vars(model.encoder)
    monkeypatch.setattr("sys.argv", ["plan_step.py", str(run), "--samples", "1"])
    with pytest.raises(SystemExit, match="--samples must be an integer >= 2"):
        bench.main()


def test_errors(run, synth_root, tmp_path, capsys):
    out = tmp_path / "x.json"
    assert "not found" in _error(capsys, ["plan", str(tmp_path / "nope"), *SMALL, "--out", str(out)])
    for flag, value in (("--samples", "1"), ("--iterations", "0"), ("--horizon", "0"), ("--episodes", "0"),
                        ("--steps", "0"), ("--replan-every", "0"), ("--model-samples", "0"),
                        ("--elite-fraction", "0"), ("--seed", "-1"), ("--move-cost", "-0.5"),
                        ("--move-cost", "nan"), ("--execute", "median"), ("--max-step", "0"), ("--max-step", "3.5"),
                        ("--max-step", "nan")):
        assert flag in _error(capsys, ["plan", str(run), *SMALL, flag, value, "--out", str(out)])
    assert "--replan-every" in _error(capsys, ["plan", str(run), *SMALL, "--replan-every", "4", "--out", str(out)])
    assert "--arms" in _error(capsys, ["plan", str(run), *SMALL, "--arms", "model", "oracle", "--out", str(out)])
    assert "--cost" in _error(capsys, ["plan", str(run), *SMALL, "--cost", "centre", "--out", str(out)])
    lab = train_tiny(synth_root, tmp_path / "lab", ["model.condition=lab"])
    assert "model.condition=lab" in _error(capsys, ["plan", str(lab), *SMALL, "--out", str(out)])
    blind = train_tiny(synth_root, tmp_path / "blind",
                       ["model.cond_embed=0", "model.pose_map=false", "model.arm_shift=false"])
    assert "model.cond_embed=0" in _error(capsys, ["plan", str(blind), *SMALL, "--out", str(out)])
    assert not out.exists()


def test_a_model_that_reads_actions_only_through_its_pose_maps_can_plan(synth_root, tmp_path):
    """model.cond_embed=0 with pose maps under causal conditioning: the dead-reckoned positions
    the maps draw come from the actions, so the model is action-conditioned and may plan."""
    run = train_tiny(synth_root, tmp_path / "posed", ["model.cond_embed=0"])
    out = tmp_path / "plan.json"
    assert main(["plan", str(run), *SMALL, "--arms", "model", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["arms"] == ["model"] and res["episodes"] == 2 and res["model"]["seconds_per_step"] > 0


def test_the_glide_benchmark_measures_a_slippery_object_gliding_on(run, tmp_path, capsys, monkeypatch,
                                                                  load_benchmark):
    """Task 42 of seed 0 (friction 0.07) glides on after the push stops, task 49 (friction 2.4) stops:
    the simulator's travel tells them apart, and the printout has both friction groups."""
    bench = load_benchmark("glide")
    tasks = {t.index: t for t in env_mod.find_tasks(0, 7)}
    travel = {}
    for index in (42, 49):
        env = env_mod.PushEnv(tasks[index])
        assert bench.push_until_moving(env, 2.5, 1.0)
        assert env.steps_taken <= bench.MAX_PUSH_STEPS
        here, steps = env.object_position(), env.steps_taken
        travel[index] = bench.true_glide(env)
        assert np.array_equal(env.object_position(), here) and env.steps_taken == steps  # simulated on a fork
    assert travel[42] > 5.0 and travel[42] > 4 * travel[49]
    picture = tmp_path / "glide.png"
    monkeypatch.setattr("sys.argv", ["glide.py", str(run), "--tasks", "7", "--samples", "2", "--picture", str(picture)])
    bench.main()
    from PIL import Image

    assert Image.open(picture).size == (2 * 64 * (2 + bench.HORIZON), 2 * 64 * 3)  # truth and 2 samples
    out = capsys.readouterr().out.splitlines()
    groups = [line for line in out if line.strip().startswith("friction")]
    assert len(groups) == 2 and "friction < 0.25" in groups[0] and "friction >= 0.25" in groups[1]
    (slippery, _), (others, _) = [(float(x) for x in re.findall(r"(\d+\.\d+) px", line)) for line in groups]
    assert slippery > others  # 3 slippery objects of the 7 glide on farther
    assert out[-1].startswith(f"wrote {picture}: task 42,")  # the farthest glide of the 7
    task42 = next(line for line in out if line.startswith("task   42"))
    assert float(re.search(r"goes\s+(\d+\.\d) px", task42).group(1)) == pytest.approx(travel[42], abs=0.05)
    for argv, message in ((["--speed", "0"], "--speed must be > 0, got 0.0"),
                          (["--speed", "4"], "--speed must be <= 3 px"), (["--samples", "0"], "--samples must be >= 1"),
                          (["--tasks", "-1"], "--tasks must be >= 0"), (["--data", "-1"], "--data must be >= 0"),
                          (["--low", "0"], "--low must be > 0"),
                          (["--data-release", "1.5"], r"--data-release: release must be a share of push plans in \[0, 1\], got 1.5")):
        monkeypatch.setattr("sys.argv", ["glide.py", str(run), *argv])
        with pytest.raises(SystemExit, match=message):
            bench.main()
    (tmp_path / "seedless.json").write_text(json.dumps({"episodes": 1, "n_past": 2, "model": {"episodes": []}}))
    monkeypatch.setattr("sys.argv", ["glide.py", str(run), "--tasks", "0", "--plan", str(tmp_path / "seedless.json")])
    with pytest.raises(SystemExit, match="seedless.json: not a readable vidpred plan result .*'seed'"):
        bench.main()
    monkeypatch.setattr("sys.argv", ["glide.py", str(run), "--plan", str(tmp_path / "none.json"), "--tasks", "0"])
    with pytest.raises(SystemExit, match="none.json: not a readable vidpred plan result with a model arm"):
        bench.main()


def test_the_glide_benchmark_imagines_the_push_from_its_start_and_predicts_one_step_at_a_time(
        run, capsys, monkeypatch, load_benchmark):
    """--imagine-push binds the model to the task's start (the push imagined too); --one-step reads
    each one-step prediction against the true frame before it: a model that predicts the next
    true frame scores the true travel, one that copies the frame before scores nothing."""

    from vidpred.planning import cost
    from vidpred.training.checkpoint import load_model

    bench = load_benchmark("glide")
    bound = []
    real_bind = cost.ModelPredictor.bind
    monkeypatch.setattr(cost.ModelPredictor, "bind", lambda self, env: (bound.append(env.steps_taken),
                                                                        real_bind(self, env))[1])
    monkeypatch.setattr("sys.argv", ["glide.py", str(run), "--tasks", "3", "--samples", "1", "--imagine-push",
                                     "--one-step"])
    bench.main()
    out = capsys.readouterr().out.splitlines()
    tasks = [line for line in out if line.startswith("task ")]
    pushed = [int(re.search(r"after\s+(\d+) push steps", line).group(1)) for line in tasks]
    assert len(tasks) == 3 and bound == [v for k in pushed for v in (0, k)]  # the start, then after the push
    assert all("one step at a time" in line for line in out if line.strip().startswith("friction"))

    task = {t.index: t for t in env_mod.find_tasks(0, 6)}[42]
    env = env_mod.PushEnv(task)
    assert bench.push_until_moving(env, 2.5, 1.0)
    model = load_model(run)[0]

    class Out:
        pred = None

    def predicts(shift):
        def fake(model, frames, conds, n_past, **kw):
            assert kw["use_posterior"] and kw["teacher_forcing"]
            Out.pred = frames[:, 1:] if shift else frames[:, :-1]  # pred[:, j] stands for frame j + 1
            return Out
        return fake

    monkeypatch.setattr("vidpred.models.svg.rollout", predicts(True))
    true, pred = bench.one_step_glide(model, env, 0)
    assert true > 5.0 and pred == pytest.approx(true, abs=1e-4)  # task 42's object glides on
    monkeypatch.setattr("vidpred.models.svg.rollout", predicts(False))
    again, frozen = bench.one_step_glide(model, env, 0)
    assert again == pytest.approx(true) and frozen < 0.05 * true  # the pseudo-pixel's pull only


def test_released_motion_counts_object_motion_away_from_the_arm(run, tmp_path, capsys, monkeypatch, load_benchmark):
    """Task 42's slippery object, pushed and then left: most of its motion is made released; a
    plan result's model episodes are replayed the same way."""
    bench = load_benchmark("glide")
    task = {t.index: t for t in env_mod.find_tasks(0, 6)}[42]
    env = env_mod.PushEnv(task)
    towards = (env.object_position() - env.effector_position()[:2] * 64) / 64
    push = np.array([*(towards / np.linalg.norm(towards) * 2.5 / 64), 0.0, env.gripper])
    actions = [push] * 5 + [env_mod.zero_action(env.gripper)] * 8
    moving, released = bench.released_motion(env_mod.PushEnv(task).episode, actions)
    assert moving > 8.0 and 0.4 * moving < released < moving
    assert bench.released_motion(env_mod.PushEnv(task).episode, actions[:0]) == (0.0, 0.0)
    plan = {"seed": 0, "episodes": 6, "n_past": 2, "model": {"episodes": [
        {"task": 42, "actions": [a.tolist() for a in actions]}]}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    monkeypatch.setattr("sys.argv", ["glide.py", str(run), "--tasks", "0", "--data", "2", "--plan",
                                     str(tmp_path / "plan.json")])
    bench.main()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("training data (seed 0, release 0, 2 sequences): ") and len(out) == 2
    share = released / moving
    assert out[1].endswith(f"{moving:.0f} px of object motion, {released:.0f} px ({share:.0%}) of it released")


def test_the_blind_simulator_stops_what_the_world_lets_glide(load_benchmark):
    """benchmarks/blind_simulator.py: after a push, the true simulator lets task 42's slippery object
    glide on under a still arm, the blind one stops it where it is; the closed loop runs on it."""
    blind_mod, glide = load_benchmark("blind_simulator"), load_benchmark("glide")
    task = {t.index: t for t in env_mod.find_tasks(0, 6)}[42]
    env = env_mod.PushEnv(task)
    assert glide.push_until_moving(env, 2.5, 1.0)
    here = env.object_position()
    blind = blind_mod.BlindSimulator(task, 3.0)
    blind.bind(env)
    sim = env.fork(blind.snap)
    for _ in range(10):
        sim.step(env_mod.zero_action(env.gripper))
    assert np.linalg.norm(env_mod.object_centre(sim.world, task.object) - here) < 1.0  # blind: it stops
    assert glide.true_glide(env) > 5.0  # the env's own world (bind changed a copy): it glides on
    assert blind_mod.BlindSimulator(task, 0.06).friction == 0.06
    cfg = cem_mod.CEMConfig(samples=4, iterations=1, horizon=3)
    lines = []
    summary = blind_mod.run(2, 0, 3.0, cfg, steps=2, report=lines.append)
    first = env_mod.find_tasks(0, 1)[0]
    assert len(summary["episodes"]) == 2 and summary["episodes"][0]["steps"] == 2
    assert summary["slippery"][1] + summary["others"][1] == 2  # tasks 5 (friction 0.575) and 17 (0.202)
    assert summary["slippery"][1] == 1 and lines[0].startswith(f"task {first.index:4d} (friction 0.57): ")


def test_run_episode_plans_with_the_predictor_it_is_given():
    """run_episode(predictor=...): the planner binds and scores that predictor, not the arm's own."""
    calls = {"bind": 0, "score": 0}

    class Stay:  # every sequence but staying still costs 1: the planner keeps the arm still
        def bind(self, env):
            calls["bind"] += 1

        def __call__(self, actions):
            calls["score"] += 1
            return np.where(np.abs(actions[..., :2]).sum((-1, -2)) > 0, 1.0, 0.0)

    cfg = cem_mod.CEMConfig(samples=4, iterations=2, horizon=3)
    record = run_episode(env_mod.find_tasks(0, 1)[0], "simulator", cfg, 3, 0, 2, predictor=Stay())
    assert calls == {"bind": 3, "score": 6}  # one plan per step, 2 iterations each
    assert not np.any(np.array(record["actions"])[:, :2])


def test_the_blind_simulator_benchmark_prints_the_split_and_refuses_bad_flags(capsys, monkeypatch, load_benchmark):
    blind_mod = load_benchmark("blind_simulator")
    monkeypatch.setattr(blind_mod, "run", lambda *a, **k: {"success_rate": 0.5, "reached_rate": 0.75,
                                                           "final_distance_px": 2.5, "slippery": [1, 2],
                                                           "others": [1, 2]})
    monkeypatch.setattr("sys.argv", ["blind_simulator.py", "--tasks", "4", "--max-step", "2"])
    blind_mod.main()
    assert capsys.readouterr().out.strip() == (
        "blind simulator (friction 3), --max-step 2, --move-cost 0.2: success 50%, reached 75%, final 2.50 px over "
        "4 tasks; solved 1/2 slippery (friction < 0.25), 1/2 others")
    for argv, message in ((["--tasks", "0"], "--tasks must be >= 1"), (["--seed", "-1"], "--seed must be >= 0"),
                          (["--friction", "0"], "--friction must be > 0"), (["--max-step", "4"], "--max-step must be"),
                          (["--move-cost", "-1"], "--move-cost must be")):
        monkeypatch.setattr("sys.argv", ["blind_simulator.py", *argv])
        with pytest.raises(SystemExit, match=message):
            blind_mod.main()
