"""What a plan costs: the designated object's distance to the goal, from predicted frames
(the model arm) or from the simulator (its upper bound).

Colour centroid (:func:`colour_centroid`): the object is found in a frame by its fill
colour c. Every pixel x gets the weight ``exp(-|x - c|^2 / (2 sigma^2))`` (RGB in
[0, 1], ``COLOUR_SIGMA`` = 0.08), set to 0 beyond ``COLOUR_CUTOFF`` = 2 sigma: a task's
object is at least ``env.MIN_CONTRAST`` = 0.3 from the table, the arm and the other
objects, and the table's texture varies by less than 0.1, so none of those pixels
count. The position is the weighted mean of the pixel centres, with a pseudo-pixel of
weight ``PRIOR_MASS`` at the object's position in the last observed frame: an object
that a prediction blurs away entirely stays where it was (and earns nothing), instead
of jumping to an undefined centroid.

Tracking (:func:`colour_track`, the model arm's default, ``cost="tracked"``): the object is
followed through the predicted frames of the horizon, each frame's pseudo-pixel at the position
the previous predicted frame gave (the first at the last observed position). Where a prediction
fades a pushed object over the horizon, its position stays where the imagined push last showed
it, instead of falling back to where it started: on the demo's test pushes the tracked position
is 6.2 px from the true one after 10 steps, the last frame's alone 9.3 px (docs/results.md).
``cost="final"`` reads the last predicted frame alone, as before.

Cost of a plan (both arms alike): the distance in px from the object to the goal
after the last step of the horizon (this module), plus ``--move-cost`` per px the arm
travels over the plan (added by the planner, ``cem.py``). Candidates are compared on
where they leave the object and how far the arm goes to get there; replanning (after
every step by default) makes up for the rest.

The model arm (:class:`ModelPredictor`) samples futures with the video model's own
sampling path, ``vidpred.models.svg.rollout(..., use_posterior=False)``, in eval mode
under ``torch.no_grad()``: the window is the last ``n_past`` observed frames and
``horizon`` future steps, its condition rows ``(action, position)`` in the model's step
convention (row j holds the action that produces window frame ``j + action_lag``:
executed actions, then the candidate's, then zero-motion padding; the recorded
positions of the observed frames, then the last observed position, which a causal
model does not read). Every candidate of a call shares the same latent noise (common
random numbers: candidates differ by their actions, not their luck); with
``model_samples`` S > 1 each candidate is rolled out under S noise draws and its cost
averaged.
"""

from __future__ import annotations

import numpy as np
import torch

from vidpred.errors import ConfigError
from vidpred.planning.defaults import COSTS

COLOUR_SIGMA = 0.08
COLOUR_CUTOFF = 2.0 * COLOUR_SIGMA
PRIOR_MASS = 1.0  # in pixels' worth of weight
ROLLOUT_BATCH = 256  # most rollouts per forward pass


def pixel_centres(H: int, W: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(xs (W,), ys (H,)): pixel centres in px (column j covers [j, j + 1))."""
    return (torch.arange(W, device=device, dtype=torch.float32) + 0.5,
            torch.arange(H, device=device, dtype=torch.float32) + 0.5)


def colour_weights(frames: torch.Tensor, colour, sigma: float = COLOUR_SIGMA,
                   cutoff: float = COLOUR_CUTOFF) -> torch.Tensor:
    """frames (..., 3, H, W) in [0, 1], colour (3,) in [0, 1] -> weights (..., H, W) in [0, 1]."""
    c = torch.as_tensor(colour, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    d2 = ((frames - c) ** 2).sum(-3)
    w = torch.exp(-d2 / (2 * sigma**2))
    return torch.where(d2 <= cutoff**2, w, torch.zeros_like(w))


def colour_centroid(frames: torch.Tensor, colour, prior_xy=None, prior_mass: float = PRIOR_MASS,
                    sigma: float = COLOUR_SIGMA, cutoff: float = COLOUR_CUTOFF) -> torch.Tensor:
    """frames (..., 3, H, W) in [0, 1] -> (..., 2) the (x, y) centroid in px of the pixels of
    ``colour`` (3,) in [0, 1]. ``prior_xy`` (2,) or (..., 2): a pseudo-pixel of weight
    ``prior_mass`` there (None: no prior; a frame without the colour then gives NaN)."""
    H, W = frames.shape[-2:]
    w = colour_weights(frames.float(), colour, sigma, cutoff)  # (..., H, W)
    xs, ys = pixel_centres(H, W, frames.device)
    mass = w.sum((-2, -1))
    sx = (w.sum(-2) * xs).sum(-1)
    sy = (w.sum(-1) * ys).sum(-1)
    if prior_xy is not None:
        prior = torch.as_tensor(prior_xy, dtype=torch.float32, device=frames.device)
        mass, sx, sy = mass + prior_mass, sx + prior_mass * prior[..., 0], sy + prior_mass * prior[..., 1]
    return torch.stack([sx / mass, sy / mass], -1)


def colour_track(frames: torch.Tensor, colour, start_xy, prior_mass: float = PRIOR_MASS,
                 sigma: float = COLOUR_SIGMA, cutoff: float = COLOUR_CUTOFF, path: bool = False) -> torch.Tensor:
    """frames (..., T, 3, H, W) in [0, 1], a predicted sequence -> (..., 2): the object of
    ``colour`` followed through the T frames. Frame t's position is its colour centroid with
    the pseudo-pixel at frame t - 1's position (frame 0's at ``start_xy`` (2,), the last
    observed position), so an object that the frames fade keeps its last seen position.
    ``path``: every frame's position instead, (..., T, 2)."""
    xy = torch.as_tensor(start_xy, dtype=torch.float32, device=frames.device).expand(*frames.shape[:-4], 2)
    steps = []
    for t in range(frames.shape[-4]):
        xy = colour_centroid(frames[..., t, :, :, :], colour, xy, prior_mass, sigma, cutoff)
        steps.append(xy)
    return torch.stack(steps, -2) if path else xy


def check_cost(cost: str) -> None:
    if cost not in COSTS:
        raise ConfigError(f"--cost must be one of {', '.join(COSTS)}, got {cost!r}")


def frame_to_tensor(frame: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [0, 1]."""
    frame = np.array(frame, dtype=np.uint8)  # a copy: arrays of PIL images are read-only
    return torch.from_numpy(frame).permute(2, 0, 1).float() / 255.0


def check_model(m, where: str) -> None:
    """A planner can only use a model (``ModelConfig`` ``m``) conditioned on actions, without
    future positions. A model without a condition embedding (``cond_embed=0``) still reads the
    actions when its pose maps draw the positions they lead to (dead reckoned, causal)."""
    if m.cond_embed == 0 and not m.pose_map:
        raise ConfigError(f"{where}: trained without actions (model.cond_embed=0 and no pose maps); planning "
                          f"needs an action-conditioned model")
    if m.condition != "causal":
        raise ConfigError(f"{where}: trained with model.condition={m.condition}, which reads the end-effector "
                          f"position of frames not yet seen; planning needs model.condition=causal")


class ModelPredictor:
    """The model arm's ``predict(actions (N, H, 4)) -> cost (N,)`` for one env state.

    ``bind(env)`` reads the context (the last ``n_past`` frames, their actions and
    positions) and the object's position in the last observed frame; call it before
    every plan. ``generator`` draws the latent noise (seeded by the caller).
    """

    def __init__(self, model, task, n_past: int, model_samples: int = 1,
                 generator: torch.Generator | None = None, cost: str = COSTS[0]):
        check_model(model.cfg, "model")
        if model_samples < 1:
            raise ConfigError(f"--model-samples must be >= 1, got {model_samples}")
        check_cost(cost)
        self.cost = cost
        self.model, self.n_past, self.samples = model, int(n_past), int(model_samples)
        self.device = next(model.parameters()).device
        self.colour = torch.tensor(task.colour, dtype=torch.float32) / 255.0
        self.goal = torch.tensor(task.goal, dtype=torch.float32)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def bind(self, env) -> None:
        if len(env.frames) < self.n_past:
            raise ValueError(f"the env has {len(env.frames)} frames, the model needs {self.n_past}")
        frames = torch.stack([frame_to_tensor(f) for f in env.frames[-self.n_past:]])  # (n_past, 3, H, W)
        self.frames = frames.to(self.device)
        self.executed = np.stack(env.actions)  # (t, 4) every executed action so far
        self.positions = np.stack(env.positions[-self.n_past:])  # (n_past, 3)
        seen = colour_centroid(frames[-1], self.colour)  # where the object is now, as the camera sees it
        self.prior_xy = seen.tolist() if torch.isfinite(seen).all() else list(env.task.start)  # hidden: its start

    def conditions(self, actions: np.ndarray) -> torch.Tensor:
        """actions (N, H, 4) candidates -> raw conditions (N, n_past + H, 7) in the model's convention."""
        N, H = actions.shape[:2]
        lag = self.model.cfg.action_lag
        P, T = self.n_past, self.n_past + H
        t0 = len(self.executed) - P  # absolute step of the first window frame
        conds = np.zeros((N, T, 7), np.float32)
        # row j: the action producing absolute frame t0 + j + lag (synth: action k produces frame k)
        past = self.executed[t0 + lag:]  # executed actions that fall in the window
        conds[:, : len(past), :4] = past
        conds[:, len(past): len(past) + H, :4] = actions[:, : T - len(past)]
        pad = conds[:, len(past) + H:, :4]
        if pad.shape[1]:  # beyond the candidates (lag > 0): zero motion, same gripper
            pad[...] = np.concatenate([np.zeros(3), actions[0, -1, 3:]])
        conds[:, :P, 4:] = self.positions
        conds[:, P:, 4:] = self.positions[-1]  # unknown: a causal model does not read it
        return torch.from_numpy(conds)

    @torch.no_grad()
    def imagine(self, actions: np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        """actions (N, H, 4) -> predicted future frames (N, S, H, 3, 64, 64) in [0, 1], float, on the
        CPU; the noise is drawn with ``generator`` (default: the predictor's own)."""
        return self._rollouts(actions, generator).cpu()

    @torch.no_grad()
    def _rollouts(self, actions: np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        """:meth:`imagine` on the model's device: the cost is read there, without moving every frame to the CPU."""
        from vidpred.models.svg import rollout

        N, H = actions.shape[:2]
        S, P, T = self.samples, self.n_past, self.n_past + actions.shape[1]
        cfg = self.model.cfg
        noise = torch.randn(S, T - 1, cfg.noise_dim, generator=generator or self.generator).to(self.device)
        conds = self.conditions(actions).to(self.device)
        n_idx = torch.arange(N, device=self.device).repeat_interleave(S)  # candidate-major rows
        s_idx = torch.arange(S, device=self.device).repeat(N)
        out = []
        for r0 in range(0, N * S, ROLLOUT_BATCH):
            n, s = n_idx[r0: r0 + ROLLOUT_BATCH], s_idx[r0: r0 + ROLLOUT_BATCH]
            r = rollout(self.model, self.frames[None].expand(len(n), *self.frames.shape), conds[n], P,
                        use_posterior=False, noise=noise[s])
            out.append(r.pred[:, P - 1:].float().clamp(0, 1))
        return torch.cat(out).view(N, S, H, *out[0].shape[-3:])

    @torch.no_grad()
    def __call__(self, actions: np.ndarray) -> np.ndarray:
        future = self._rollouts(actions)  # (N, S, H, 3, h, w) on the model's device
        colour, goal = self.colour.to(self.device), self.goal.to(self.device)
        if self.cost == "tracked":
            xy = colour_track(future, colour, self.prior_xy)  # (N, S, 2)
        else:
            xy = colour_centroid(future[:, :, -1], colour, prior_xy=self.prior_xy)  # (N, S, 2)
        return (xy - goal).norm(dim=-1).mean(1).double().cpu().numpy()


class SimulatorPredictor:
    """The simulator arm's ``predict``: every candidate simulated from the env's true state
    (a snapshot taken at ``bind``), cost = true object distance to the goal after it."""

    def __init__(self, task):
        self.task = task
        self.goal = np.array(task.goal)

    def bind(self, env) -> None:
        self.env, self.snap = env, env.snapshot()

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        from vidpred.planning.env import object_centre

        cost = np.empty(len(actions))
        for n, plan in enumerate(actions):
            sim = self.env.fork(self.snap)
            for a in plan:
                sim.step(a)
            cost[n] = np.linalg.norm(object_centre(sim.world, self.task.object) - self.goal)
        return cost
