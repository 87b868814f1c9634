"""Schedules as pure functions of the step or epoch, so a resumed run reproduces them exactly."""

from __future__ import annotations

import math

import numpy as np

from vidpred.config import KLConfig, TeacherForcingConfig


def kl_beta(cfg: KLConfig, step: int, total_steps: int) -> float:
    """KL weight at optimiser step ``step`` (0-based) of ``total_steps``.

    * ``constant``: ``beta_max`` throughout.
    * ``monotonic``: linear ramp 0 -> beta_max over the first ``ratio`` of the run, then flat
      (Bowman et al. 2016).
    * ``cyclical``: the run is cut into ``cycles`` equal periods; each ramps linearly
      0 -> beta_max over its first ``ratio`` and stays there for the rest
      (Fu et al. 2019, eq. 6 with a linear f).

    With ``delay`` the first ``delay`` of the run (or of each cycle) has beta exactly 0 and
    the ramp starts after it: while the decoder still ignores z, any positive weight, however
    small, pulls the posterior onto the prior at Adam's full step size (Adam rescales the KL's
    gradient when it is the only one a posterior weight gets), so the latent has to become
    useful at no cost first (``benchmarks/latent_coin.py``).
    """
    if cfg.schedule == "constant":
        return float(cfg.beta_max)
    total = max(int(total_steps), 1)
    period = total / (cfg.cycles if cfg.schedule == "cyclical" else 1)
    tau = (step % period) / period if cfg.schedule == "cyclical" else min(step / period, 1.0)
    if tau < cfg.delay:
        return 0.0
    return float(cfg.beta_max * min((tau - cfg.delay) / cfg.ratio, 1.0))


def learning_rate(lr: float, schedule: str, final: float, step: int, total_steps: int) -> float:
    """Learning rate at optimiser step ``step`` (0-based) of ``total_steps``.

    * ``constant``: ``lr`` throughout.
    * ``cosine``: ``lr * (final + (1 - final) * (1 + cos(pi * tau)) / 2)`` with
      ``tau = step / (total_steps - 1)`` clamped to [0, 1]: ``lr`` at the first step,
      ``lr * final`` at the last planned one and after (Loshchilov & Hutter 2017,
      one cycle without restarts).
    """
    if schedule == "constant":
        return float(lr)
    tau = min(max(step / max(int(total_steps) - 1, 1), 0.0), 1.0)
    return float(lr * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * tau))))


def teacher_forcing_ratio(cfg: TeacherForcingConfig, epoch: int) -> float:
    """Probability of teacher forcing in ``epoch`` (0-based): ``start`` until
    ``decay_start_epoch``, then one ``step`` less per epoch, never below ``floor``."""
    if epoch < cfg.decay_start_epoch:
        return float(cfg.start)
    drops = epoch - cfg.decay_start_epoch + 1
    return float(max(cfg.floor, cfg.start - cfg.step * drops))


def use_teacher_forcing(ratio: float, seed: int, step: int) -> bool:
    """One draw per batch, a pure function of (seed, step): identical across
    processes under DDP and across a resume."""
    if ratio >= 1.0:
        return True
    if ratio <= 0.0:
        return False
    return bool(np.random.default_rng([seed, step, 0x7F]).random() < ratio)

