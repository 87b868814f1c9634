"""Sampling-based MPC: the cross-entropy method over action sequences, and random actions.

The planner is generic over ``predict(actions (N, H, 4)) -> cost (N,)`` (lower is
better): the video model's predictor, the simulator, anything. It searches the arm's
displacement ``(dx, dy)`` of every step (dataset units); ``dz`` and the gripper are
held at the ``fixed`` values (0 and the episode's gripper: the tasks never lift or
grip). VP2 (Tian et al. 2023)'s CEM scores 200 samples x 3 iterations and replans every
step; the defaults (``defaults.py``) keep its 3 iterations, 5% elites (at least 2),
horizon 10, temporally correlated noise and replanning after every step, but score 60
samples, cut towards 2 s per plan on a 2-core CPU (3.1-4.6 s per step with the tracked cost;
docs/planning.md).

Per iteration: N sequences ``mean + std * e`` with AR(1) noise
``e_t = beta e_{t-1} + sqrt(1 - beta^2) eps_t`` (unit variance per step, correlation
``beta`` between neighbours: smooth pushes rather than jitter), each step's ``(dx, dy)``
scaled back onto the disc ``|(dx, dy)| <= action_limit`` (3 px per step, the most the
training data's scripted arm moves; ``--max-step`` makes it smaller), scored; the elites'
per-step mean and standard deviation become the next distribution. The plan returned is the best
sequence scored in any iteration (``execute="best"``, the default) or the last iteration's elite
mean (``execute="mean"``), which is less tuned to one prediction's errors: the best of many
noisy predictions is the one whose errors flatter it most. With ``still`` (the default) the last
sample of every iteration is the zero-motion sequence, so with ``execute="best"`` leaving the
object where it is can always win (the elites' mean is zero only if every elite is); with
``move_cost`` c (default 0.2) a sequence costs ``predict + c * (px the arm travels)``, so among
sequences predicted to leave the object equally close the one that moves the arm least wins, and
a long push must be predicted to gain c px per px of travel. They aim at a model's closed-loop
plans bringing objects to the goal and then past it (a pushed object with a low hidden friction
glides on once the arm stops, which the model does not predict: docs/results.md); with 0.2 the
demo's model solved 36% of 50 tasks against 26% with 0.05 and 22% with neither. With
``warm_start`` the next plan starts from the final mean shifted by the executed steps (zeros
appended), with the initial standard deviation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from vidpred.data.synth import WORLD
from vidpred.errors import ConfigError
from vidpred.planning import defaults
from vidpred.planning.env import ACTION_LIMIT

MOVE = 2  # planned dimensions: (dx, dy)
INIT_STD_PX = 2.0  # initial standard deviation per axis, px per step
MAX_MOVE_COST = 1000.0  # a sanity bound (px of cost per px of travel): far beyond any use, short of overflow


@dataclass
class CEMConfig:
    samples: int = defaults.SAMPLES
    """Action sequences scored per iteration (``--samples``)."""
    iterations: int = defaults.ITERATIONS
    """Refinements of the sampling distribution per plan (``--iterations``)."""
    elite_fraction: float = defaults.ELITE_FRACTION
    """Share of the samples the distribution is refitted to (``--elite-fraction``)."""
    min_elites: int = 2
    horizon: int = defaults.HORIZON
    """Steps per action sequence (``--horizon``)."""
    replan_every: int = defaults.REPLAN_EVERY
    """Steps of a plan executed before replanning, 1..horizon (``--replan-every``)."""
    correlation: float = 0.5
    """AR(1) coefficient of the action noise between neighbouring steps, in [0, 1)."""
    init_std: float = INIT_STD_PX / WORLD
    """Initial standard deviation of (dx, dy), dataset units."""
    action_limit: float = defaults.MAX_STEP_PX / WORLD
    """Largest |(dx, dy)| per step, dataset units (``--max-step``, in px): at most ``env.ACTION_LIMIT``,
    the most the training data's scripted arm moves."""
    warm_start: bool = True
    still: bool = defaults.STILL
    """Score the zero-motion sequence (the arm stays where it is) as one of every iteration's samples
    (``--still`` / ``--no-still``): the planner can choose to leave the object where it is."""
    move_cost: float = defaults.MOVE_COST
    """Cost added per px of the arm's planned travel (``--move-cost``): of two sequences predicted to
    leave the object equally close, the one that moves the arm less wins."""
    execute: str = defaults.EXECUTES[0]
    """The plan returned (``--execute``): ``best``, the lowest-cost sequence scored in any iteration, or
    ``mean``, the mean of the last iteration's elites (less tuned to one prediction's errors)."""
    elites: int = field(init=False)

    def __post_init__(self) -> None:
        checks = [("--samples", self.samples, 2), ("--iterations", self.iterations, 1),
                  ("--horizon", self.horizon, 1), ("--replan-every", self.replan_every, 1)]
        for flag, value, low in checks:
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{flag} must be an integer >= {low}, got {value!r}")
        if self.replan_every > self.horizon:
            raise ConfigError(f"--replan-every must be <= --horizon ({self.horizon}), got {self.replan_every}")
        if not 0.0 < self.elite_fraction <= 1.0:  # also rejects NaN
            raise ConfigError(f"--elite-fraction must be > 0 and <= 1, got {self.elite_fraction}")
        if not 0.0 <= self.correlation < 1.0:
            raise ConfigError(f"correlation must be in [0, 1), got {self.correlation}")
        if not 0.0 <= self.move_cost <= MAX_MOVE_COST:  # also rejects NaN
            raise ConfigError(f"--move-cost must be a number in [0, {MAX_MOVE_COST:g}], got {self.move_cost}")
        if self.still and self.samples < 3:
            raise ConfigError(f"--samples must be >= 3 with --still (one sample is the zero-motion sequence), "
                              f"got {self.samples}")
        if self.execute not in defaults.EXECUTES:
            raise ConfigError(f"--execute must be one of {', '.join(defaults.EXECUTES)}, got {self.execute!r}")
        if not 0.0 < self.action_limit <= ACTION_LIMIT * (1 + 1e-9):  # also rejects NaN
            raise ConfigError(f"--max-step must be > 0 and <= {ACTION_LIMIT * WORLD:g} px (the most the training "
                              f"data's arm moves per step), got {self.action_limit * WORLD:g}")
        if not self.init_std > 0:
            raise ConfigError(f"init_std must be > 0, got {self.init_std}")
        self.elites = int(min(self.samples, max(self.min_elites, round(self.elite_fraction * self.samples))))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["init_std_px"] = round(self.init_std * WORLD, 6)
        d["action_limit_px"] = round(self.action_limit * WORLD, 6)
        return d


def correlated_noise(rng: np.random.Generator, shape: tuple[int, int, int], beta: float) -> np.ndarray:
    """(N, H, D) standard normal noise, AR(1)-correlated along H with coefficient ``beta``."""
    eps = rng.standard_normal(shape)
    out = np.empty_like(eps)
    out[:, 0] = eps[:, 0]
    scale = np.sqrt(1.0 - beta**2)
    for t in range(1, shape[1]):
        out[:, t] = beta * out[:, t - 1] + scale * eps[:, t]
    return out


def clip_moves(xy: np.ndarray, limit: float) -> np.ndarray:
    """(..., 2) displacements scaled onto the disc of radius ``limit``."""
    norm = np.linalg.norm(xy, axis=-1, keepdims=True)
    return xy * np.minimum(1.0, limit / np.maximum(norm, 1e-12))


def full_actions(xy: np.ndarray, fixed) -> np.ndarray:
    """(..., 2) displacements + fixed (dz, gripper) -> (..., 4) actions."""
    out = np.empty(xy.shape[:-1] + (4,))
    out[..., :MOVE] = xy
    out[..., MOVE:] = np.asarray(fixed, dtype=np.float64)
    return out


def random_actions(rng: np.random.Generator, steps: int, cfg: CEMConfig, fixed) -> np.ndarray:
    """(steps, 4): one sequence from CEM's initial distribution (the random arm)."""
    xy = cfg.init_std * correlated_noise(rng, (1, steps, MOVE), cfg.correlation)[0]
    return full_actions(clip_moves(xy, cfg.action_limit), fixed)


@dataclass
class Plan:
    actions: np.ndarray
    """(H, 4) the sequence to execute: ``best`` or ``mean`` (``CEMConfig.execute``)."""
    cost: float
    """The best sequence's cost (the mean sequence is not scored)."""
    best_per_iteration: list[float]
    """Lowest cost seen in each iteration."""
    best: np.ndarray
    """(H, 4) the lowest-cost sequence scored in any iteration."""
    mean: np.ndarray
    """(H, 4) the mean of the last iteration's elites, on the action disc."""


class CEM:
    """A CEM planner with its warm-start state; ``rng`` draws every sample."""

    def __init__(self, cfg: CEMConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.mean = np.zeros((cfg.horizon, MOVE))
        self._final_mean = self.mean

    def plan(self, predict, fixed) -> Plan:
        cfg = self.cfg
        mean = self.mean.copy()
        std = np.full_like(mean, cfg.init_std)
        best_xy, best_cost, per_iteration = None, np.inf, []
        for _ in range(cfg.iterations):
            e = correlated_noise(self.rng, (cfg.samples, cfg.horizon, MOVE), cfg.correlation)
            xy = clip_moves(mean + std * e, cfg.action_limit)  # (N, H, 2)
            if cfg.still:
                xy[-1] = 0.0
            cost = np.asarray(predict(full_actions(xy, fixed)), dtype=np.float64)
            if cost.shape != (cfg.samples,):
                raise ValueError(f"predict returned costs of shape {cost.shape}, expected ({cfg.samples},)")
            cost = np.where(np.isfinite(cost), cost, np.inf)  # a diverged prediction is never chosen
            if cfg.move_cost:
                cost = cost + cfg.move_cost * WORLD * np.linalg.norm(xy, axis=-1).sum(-1)
            order = np.argsort(cost, kind="stable")
            elite = xy[order[: cfg.elites]]
            mean, std = elite.mean(0), elite.std(0)
            per_iteration.append(float(cost[order[0]]))
            if best_xy is None or cost[order[0]] < best_cost:
                best_xy, best_cost = xy[order[0]], float(cost[order[0]])
        self._final_mean = mean
        best, mean_plan = full_actions(best_xy, fixed), full_actions(clip_moves(mean, cfg.action_limit), fixed)
        return Plan(best if cfg.execute == "best" else mean_plan, best_cost, per_iteration, best, mean_plan)

    def advance(self, steps: int) -> None:
        """``steps`` of the plan were executed: shift the warm start (or reset it)."""
        if self.cfg.warm_start:
            self.mean = np.concatenate([self._final_mean[steps:], np.zeros((min(steps, self.cfg.horizon), MOVE))])
        else:
            self.mean = np.zeros((self.cfg.horizon, MOVE))
