"""Training terms for the latent: the best-of-many term (``train.best_of``: the loss by hand, its gradient, its
settings, the loop) and the arm-position term of ``model.arm_progress`` (``train.arm_weight``)."""

import re
from contextlib import nullcontext

import pytest
import torch

from vidpred.config import ModelConfig, load_config
from vidpred.errors import ConfigError
from vidpred.models.svg import SVG, rollout
from vidpred.training import trainer

from test_training import tiny_cfg


def small_model():
    torch.manual_seed(0)
    model = SVG(ModelConfig(width=4, g_dim=16, z_dim=4, rnn_size=16, cond_embed=8, norm="group"))
    frames, conds = torch.rand(2, 6, 3, 64, 64), torch.randn(2, 6, 7)
    frames[:, 3:, :, 10:20] = frames[:, 1:2, :, 10:20]  # some pixels stay as last observed: a real motion mask
    return model, frames, conds


def run_scores(model, frames, conds, noise, samples, motion_weight):
    """Each free run scored on its own, from its own rollout: (sequences, samples)."""
    n_past = 2
    w = 1 + motion_weight * trainer.moving_pixels(frames, n_past)
    scores = torch.zeros(frames.shape[0], samples)
    for i in range(frames.shape[0]):
        for k in range(samples):
            row = i * samples + k
            out = rollout(model, frames[i : i + 1, :n_past], conds[i : i + 1], n_past, use_posterior=False,
                          noise=noise[row : row + 1])
            sq = (out.pred[:, n_past - 1 :] - frames[i : i + 1, n_past:]) ** 2 * w[i : i + 1, n_past - 1 :]
            scores[i, k] = sum(sq[:, t].mean() for t in range(sq.shape[1]))
    return scores


def test_best_of_many_is_the_mean_of_each_sequences_best_free_run():
    model, frames, conds = small_model()
    samples = 3
    noise = 3 * torch.randn(2 * samples, 5, model.cfg.noise_dim)  # wide draws: runs that differ
    got = trainer.best_of_many_loss(model, frames, conds, 2, samples, noise, nullcontext(), motion_weight=3.0)
    with torch.no_grad():
        scores = run_scores(model, frames, conds, noise, samples, 3.0)
    assert (scores.max(1).values - scores.min(1).values > 1e-6).all()  # the draws lead to different runs
    torch.testing.assert_close(got.detach(), scores.min(1).values.mean(), rtol=1e-5, atol=1e-7)
    plain = trainer.best_of_many_loss(model, frames, conds, 2, samples, noise, nullcontext())
    assert plain < got  # the motion weight reaches the score


def test_only_the_winning_run_gets_a_gradient():
    model, frames, conds = small_model()
    samples = 3
    noise = (3 * torch.randn(2 * samples, 5, model.cfg.noise_dim)).requires_grad_()
    trainer.best_of_many_loss(model, frames, conds, 2, samples, noise, nullcontext()).backward()
    with torch.no_grad():
        winners = run_scores(model, frames, conds, noise, samples, 0.0).argmin(1)
    # rows 1.. of a run's noise are its prior draws (row 0 warms up on the observed frames)
    moved = noise.grad[:, 1:].abs().sum((1, 2)).view(2, samples) > 0
    assert moved.tolist() == [[k == int(w) for k in range(samples)] for w in winners]


@pytest.mark.parametrize("override,message", [
    ("train.best_of.samples=1", "train.best_of.samples must be 0 (off) or >= 2, got 1"),
    ("train.best_of.samples=-2", "train.best_of.samples must be 0 (off) or >= 2, got -2"),
    ("train.best_of.batch=0", "train.best_of.batch must be >= 1, got 0"),
    ("train.best_of.weight=-1", "train.best_of.weight must be a finite number > 0 (train.best_of.samples=0 "
                                "switches the term off), got -1"),
    ("train.best_of.weight=0", "train.best_of.weight must be a finite number > 0"),
    ("train.best_of.weight=nan", "train.best_of.weight must be a finite number, got nan"),
    ("train.best_of.start=1", "train.best_of.start must be in [0, 1), got 1"),
    ("train.best_of.samples=abc", "train.best_of.samples"),
])
def test_best_of_settings_are_checked(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("synth-cpu", [override])


def test_best_of_refuses_batch_norm():
    """The term's batch is a few sequences many times over: batch statistics of it would be wrong."""
    with pytest.raises(ConfigError, match="train.best_of .*model.norm=batch.*model.norm=group"):
        load_config("synth-cpu", ["train.best_of.samples=4", "model.norm=batch"])
    assert load_config("synth-cpu", ["model.norm=batch"]).train.best_of.samples == 0


def test_training_adds_the_term_from_its_start_step(synth_root, tmp_path, monkeypatch):
    """4 planned steps, start 0.6: from step ceil(2.4) = 3 (0-based) on, the term runs on the first
    ``batch`` sequences with ``samples`` prior draws from its own noise stream, keyed by (seed, step),
    and the loss is the ELBO (with the arm term of train.arm_weight) plus weight x the term."""
    calls, elbo = [], []
    real, real_loss = trainer.best_of_many_loss, trainer.compute_loss

    def spy(net, frames, conds, n_past, samples, noise, amp_ctx, motion_weight=0.0):
        calls.append((frames.clone(), samples, noise.clone(), motion_weight))
        return real(net, frames, conds, n_past, samples, noise, amp_ctx, motion_weight)

    def loss_spy(*args, **kwargs):
        got = real_loss(*args, **kwargs)
        elbo.append((got[0].item(), kwargs.get("arm_weight")))
        return got

    monkeypatch.setattr(trainer, "best_of_many_loss", spy)
    monkeypatch.setattr(trainer, "compute_loss", loss_spy)
    cfg = tiny_cfg(synth_root, "train.epochs=2", "train.steps_per_epoch=2", "train.best_of.samples=3",
                   "train.best_of.batch=1", "train.best_of.start=0.6", "train.best_of.weight=0.5",
                   "model.arm_progress=true", "train.arm_weight=0.25")
    trainer.train(cfg, tmp_path / "on", progress=False)
    assert [a for _, a in elbo] == [0.25] * 4  # the trainer passes train.arm_weight on
    assert len(calls) == 1
    frames, samples, noise, motion_weight = calls[0]
    shape = (3, cfg.train.window - 1, cfg.model.noise_dim)
    assert samples == 3 and frames.shape[0] == 1 and motion_weight == cfg.train.motion_weight
    torch.testing.assert_close(noise, trainer.step_noise(cfg.train.seed, 3, shape, trainer.BEST_OF_TAG))
    assert not torch.equal(noise, trainer.step_noise(cfg.train.seed, 3, shape))  # not the ELBO's stream
    steps = [r for r in trainer.read_metrics(tmp_path / "on") if r["kind"] == "step"]
    assert [("best_of" in r) for r in steps] == [False, False, False, True]
    assert steps[3]["best_of"] > 0
    assert steps[3]["loss"] == pytest.approx(elbo[3][0] + 0.5 * steps[3]["best_of"], rel=1e-5)
    assert [r["loss"] for r in steps[:3]] == pytest.approx([e for e, _ in elbo[:3]], rel=1e-6)


def test_arm_weight_adds_the_squared_pixel_distance_of_the_predicted_arm():
    """loss = the ELBO + arm_weight * sum over frames of the batch-mean squared distance (px of the
    64 px frame, x and y only) between the predicted and the recorded arm positions."""
    torch.manual_seed(0)
    model = SVG(ModelConfig(width=4, g_dim=16, z_dim=4, rnn_size=16, cond_embed=8, norm="group", decoder="cdna",
                            condition="causal", action_lag=0, pose_map=True, arm_shift=True, arm_progress=True))
    torch.nn.init.normal_(model.progress.weight, std=1.0)
    frames, conds = torch.rand(2, 5, 3, 64, 64), torch.rand(2, 5, 7)
    noise = torch.randn(2, 4, model.cfg.noise_dim)
    plain = trainer.compute_loss(model, frames, conds, 2, 0.01, True, noise, nullcontext())
    scored = trainer.compute_loss(model, frames, conds, 2, 0.01, True, noise, nullcontext(), arm_weight=0.5)
    arm = rollout(model, frames, conds, 2, noise=noise).arm
    want = sum((((arm[b, t, :2] - conds[b, t + 1, 4:6]) * 64) ** 2).sum() for b in range(2) for t in range(4)) / 2
    assert want > 1
    torch.testing.assert_close(scored[0] - plain[0], 0.5 * want, rtol=1e-4, atol=1e-6)
    for a, b in zip(plain[1:], scored[1:]):  # the logged mse and kl are unchanged
        torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="train.arm_weight .*model.arm_progress=true"):
        load_config("synth-cpu", ["train.arm_weight=1"])
    with pytest.raises(ConfigError, match="train.arm_weight must be >= 0, got -1"):
        load_config("synth-cpu", ["train.arm_weight=-1", "model.arm_progress=true"])


def test_best_of_refuses_several_processes(synth_root, tmp_path):
    """A second forward per step through the DDP wrapper is not supported: a one-line refusal
    before anything is written."""
    from vidpred.training.distributed import Dist

    cfg = tiny_cfg(synth_root, "train.best_of.samples=2")
    with pytest.raises(ConfigError, match="train.best_of runs on one process only"):
        trainer._train(cfg, tmp_path / "run", False, False, torch.device("cpu"), Dist(rank=0, world=2))
    assert not (tmp_path / "run").exists()
