"""``model.arm_latent``: the arm's progress along its commanded moves as a latent of its own,
read from the recorded moves by the posterior, sampled from a learned prior in a free run."""

import math
from contextlib import nullcontext

import pytest
import torch

from vidpred.config import ModelConfig
from vidpred.errors import ConfigError
from vidpred.models.arm import ArmLatent, progress_logit
from vidpred.models.svg import ACTION_DIM, SVG, rollout
from vidpred.training.trainer import compute_loss

ARM = dict(width=4, g_dim=16, z_dim=4, rnn_size=16, cond_embed=8, norm="group", decoder="cdna", kernel_size=3,
           coords=True, skip_frame="previous", condition="causal", action_lag=0, pose_map=True, arm_shift=True,
           arm_progress=True, arm_latent=True)
MOVE = torch.tensor([0.05, 0.01, 0.0])  # commanded per step: 3.2 px right, 0.64 px down
START = torch.tensor([0.3, 0.5, 0.02])


def model_and_window(stall_from: int = 3, seed: int = 0):
    """A tiny arm-latent model and a window of 6 frames whose arm follows its commands up to frame
    ``stall_from`` and then stays there (an object too heavy to push)."""
    torch.manual_seed(seed)
    model = SVG(ModelConfig(**ARM)).eval()
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(2, 6, 3, 64, 64, generator=g)
    conds = torch.zeros(2, 6, 7)
    conds[..., :3] = MOVE
    steps = torch.arange(6).clamp(max=stall_from).float()
    conds[..., ACTION_DIM:] = START + steps[:, None] * MOVE
    return model, frames, conds


def test_progress_logit_is_the_logit_of_half_the_progress_along_the_command():
    c = MOVE.expand(5, 3)
    r = torch.stack([MOVE, 0.5 * MOVE, torch.zeros(3), torch.tensor([-0.01, 0.05, 0.0]), 1.5 * MOVE])
    got = progress_logit(c[None], r[None])[0, :, 0]
    want = torch.tensor([0.0, math.log(0.25 / 0.75), math.log(0.01 / 0.99), math.log(0.01 / 0.99),
                         math.log(0.75 / 0.25)])  # full, half, stalled, at right angles, 1.5x
    torch.testing.assert_close(got, want)
    # a command under half a pixel has no progress to read: 0, dead reckoning
    assert progress_logit(torch.full((1, 1, 3), 0.004), torch.zeros(1, 1, 3)).item() == 0


@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_the_posterior_puts_the_arm_where_it_was_recorded_and_stalled(teacher_forcing):
    """With the arm latent's noise at zero its posterior run follows the recorded arm, stall and
    all (within 0.2 px, the clamped logit's creep), where dead reckoning runs on by 6.5 px."""
    model, frames, conds = model_and_window(stall_from=3)
    noise = torch.zeros(2, 5, model.cfg.noise_dim)
    with torch.no_grad():
        out = rollout(model, frames, conds, 2, use_posterior=True, teacher_forcing=teacher_forcing, noise=noise)
    recorded = conds[:, 1:, ACTION_DIM:]
    assert (out.arm - recorded).abs().max() < 0.2 / 64
    reckoned = model.embed_conditions(conds, 2)[2][:, :, 1]
    assert (reckoned - recorded).abs().max() > 6 / 64
    assert out.kl.shape == (2, 5, model.cfg.levels + 1) and (out.kl[..., -1] > 0).all()


def confident_prior(model, logits, means):
    """Make the arm's prior ignore its input: fixed component weights and means, no spread."""
    head = model.arm.prior.head
    head.weight.zero_()
    head.bias.copy_(torch.tensor([*logits, *means, -30.0, -30.0]))


def test_a_free_run_reads_no_recorded_position_of_a_frame_it_predicts_and_samples_the_prior():
    """From the prior: the future's recorded positions change nothing; the arm's noise changes
    the arm; with a confident prior its component sets how far the arm gets, and the component
    is drawn with the step's first noise number. Observed steps still follow the recorded arm."""
    model, frames, conds = model_and_window(stall_from=3)
    other = conds.clone()
    other[:, 2:, ACTION_DIM:] = torch.rand(2, 4, 3)  # positions of frames not yet seen
    noise = torch.randn(2, 5, model.cfg.noise_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = rollout(model, frames, conds, 2, use_posterior=False, noise=noise)
        b = rollout(model, frames[:, :2], other, 2, use_posterior=False, noise=noise)
        torch.testing.assert_close(a.pred, b.pred)
        torch.testing.assert_close(a.arm, b.arm)
        assert a.kl.abs().max() == 0 and a.kl.shape[-1] == model.cfg.levels + 1
        moved = noise.clone()
        moved[..., -1] += 1.0
        c = rollout(model, frames, conds, 2, use_posterior=False, noise=moved)
        assert (c.arm[:, 1:] - a.arm[:, 1:]).abs().max() > 1e-4  # the arm's own noise moves it
        k = torch.arange(1, 5).float()[:, None]  # frame 2 on: frame 1's position + factor x the moves since

        def free_run(noise):
            return rollout(model, frames, conds, 2, use_posterior=False, noise=noise).arm

        for logits, means, factor in (((30.0, -30.0), (0.0, -30.0), 1.0), ((-30.0, 30.0), (0.0, -30.0), 0.0)):
            confident_prior(model, logits, means)
            arm = free_run(noise)
            torch.testing.assert_close(arm[:, 1:], conds[:, 1, ACTION_DIM:][:, None] + factor * k * MOVE,
                                       rtol=0, atol=1e-6)
            # frame 1 is observed: the posterior reads its recorded move, even under a stalling prior
            assert (arm[:, 0] - conds[:, 1, ACTION_DIM:]).abs().max() < 0.2 / 64
        confident_prior(model, (0.0, 0.0), (0.0, -30.0))  # even odds: the first noise number decides
        split = noise.clone()
        split[0, :, -2], split[1, :, -2] = 3.0, -3.0
        arm = free_run(split)
        torch.testing.assert_close(arm[0, 1:], conds[0, 1, ACTION_DIM:] + 0 * k * MOVE, rtol=0, atol=1e-6)
        torch.testing.assert_close(arm[1, 1:], conds[1, 1, ACTION_DIM:] + k * MOVE, rtol=0, atol=1e-6)


def test_the_mixture_prior_samples_and_scores_like_torch_distributions():
    from torch.distributions import Categorical, MixtureSameFamily, Normal

    g = torch.Generator().manual_seed(3)
    logits, mu, lv = torch.randn(4, 3, 2, generator=g), torch.randn(4, 3, 2, generator=g), torch.randn(4, 3, 2, generator=g)
    mix = MixtureSameFamily(Categorical(logits=logits), Normal(mu, (0.5 * lv).exp()))
    u = torch.randn(4, 3, 1, generator=g)
    mu_q, lv_q = torch.randn(4, 3, 1, generator=g), torch.randn(4, 3, 1, generator=g)
    want = Normal(mu_q, (0.5 * lv_q).exp()).log_prob(u)[..., 0] - mix.log_prob(u[..., 0])
    torch.testing.assert_close(ArmLatent.kl(u, mu_q, lv_q, (logits, mu, lv)), want)
    # sampling: the component whose cumulative weight first exceeds the normal CDF of eps[..., 0]
    eps = torch.randn(4, 3, 2, generator=g)
    uniform = Normal(0.0, 1.0).cdf(eps[..., 0])
    k = (uniform > logits.softmax(-1)[..., 0]).long()[..., None]
    want = mu.gather(-1, k) + (0.5 * lv.gather(-1, k)).exp() * eps[..., 1:]
    torch.testing.assert_close(ArmLatent.sample((logits, mu, lv), eps), want)
    # over many draws the components come up as often as their weights say
    big = torch.randn(20000, 1, 2, generator=g)
    draws = ArmLatent.sample((torch.tensor([[[1.0, 0.0]]]).expand(20000, 1, 2), torch.tensor([[[5.0, -5.0]]]).expand(20000, 1, 2),
                              torch.full((20000, 1, 2), -10.0)), big)
    assert abs((draws > 0).float().mean().item() - torch.tensor([1.0, 0.0]).softmax(0)[0].item()) < 0.02


def test_the_kl_trains_the_arm_prior_and_the_arm_nets_get_gradients():
    model, frames, conds = model_and_window()
    model.train()
    noise = torch.randn(2, 5, model.cfg.noise_dim, generator=torch.Generator().manual_seed(2))
    for forced in (True, False):
        model.zero_grad()
        loss, _, kl, kl_levels = compute_loss(model, frames, conds, 2, 1e-4, forced, noise, nullcontext())
        assert kl_levels.shape == (model.cfg.levels + 1,) and kl_levels[-1] > 0
        loss.backward()
        for net in (model.arm.prior, model.arm.posterior_net):
            assert sum(p.grad.abs().sum() for p in net.parameters()) > 0


def test_arm_latent_settings():
    assert ModelConfig(**ARM).noise_dim == 4 + 2
    assert ModelConfig(**{**ARM, "seq_z": 3, "levels": 2}).noise_dim == 2 * 4 + 3 + 2
    with pytest.raises(ConfigError, match="model.arm_latent .*model.arm_progress=true"):
        ModelConfig(**{**ARM, "arm_progress": False})
    assert SVG(ModelConfig(**ARM)).progress is None  # the latent replaces the head on (g, z)


@pytest.mark.parametrize("mode", ["teacher-forced", "stepwise", "free"])
def test_the_prior_reads_whether_the_arm_was_stalled_at_the_step_before(mode):
    """In every path the prior's input at step t ends with s = sigmoid(-2 (u_{t-1} + 2)) of the
    latent the step before used (u_{-1} = 0), read back from the arm's positions: about 1 after
    a stalled step, about 0 after a free one, so a free step's jitter barely moves it."""
    model, frames, conds = model_and_window(stall_from=3)
    seen, inputs = [], []

    def hook(module, args, out):  # returns None: the output stays
        seen.append(args[0][..., -1])
        inputs.append(args[0])

    model.arm.prior.embed.register_forward_hook(hook)
    noise = torch.randn(2, 5, model.cfg.noise_dim, generator=torch.Generator().manual_seed(4))
    kw = {"teacher-forced": dict(teacher_forcing=True), "stepwise": dict(teacher_forcing=False),
          "free": dict(use_posterior=False)}[mode]
    with torch.no_grad():
        out = rollout(model, frames, conds, 2, noise=noise, **kw)
    s = torch.cat(seen, 1)  # (B, 5)
    # each step's factor from its move: observed frames 0 and 1 start where recorded, later ones where the last left off
    start = torch.cat([conds[:, :2, ACTION_DIM:], out.arm[:, 1:-1]], 1)
    factor = (out.arm[..., 0] - start[..., 0]) / MOVE[0]
    u = torch.logit(factor / 2)
    u_prev = torch.cat([torch.zeros(2, 1), u[:, :-1]], 1)
    torch.testing.assert_close(s, torch.sigmoid(-2 * (u_prev + 2)), rtol=0, atol=2e-4)
    if mode != "free":  # the recorded stall from frame 4 on: the prior is told of it
        assert (s[:, 4] > 0.9).all() and (s[:, 1:3] < 0.05).all()
    if mode == "teacher-forced":  # before it: the encodings of frames t-1 and the commanded moves
        x = inputs[0]
        h = model.encode(frames)[0][:, :-1]
        torch.testing.assert_close(x[..., : h.shape[-1]], h)
        torch.testing.assert_close(x[..., h.shape[-1] : -1], MOVE.expand(2, 5, 3) * 16)  # in units of 4 px


def test_the_posterior_draws_with_its_own_spread():
    """u = mean + exp(logvar / 2) * eps: the posterior's noise (the second arm number) moves the arm
    by what its log-variance says, the first (the prior's component) does not."""
    model, frames, conds = model_and_window()
    with torch.no_grad():
        model.arm.posterior_net[-1].bias[1] = 0.0  # standard deviation 1
        noise = torch.zeros(2, 5, model.cfg.noise_dim)
        base = rollout(model, frames, conds, 2, noise=noise).arm
        comp = noise.clone()
        comp[..., -2] = 3.0
        torch.testing.assert_close(rollout(model, frames, conds, 2, noise=comp).arm, base)
        draw = noise.clone()
        draw[:, 0, -1] = 1.0  # step 0 only: u = 0 + 1, the factor 2 sigmoid(1) instead of 1
        arm = rollout(model, frames, conds, 2, noise=draw).arm
        torch.testing.assert_close(arm[:, 0], conds[:, 0, ACTION_DIM:] + 2 * torch.sigmoid(torch.tensor(1.0)) * MOVE)


def test_the_synth_cpu_arm_preset_is_synth_cpu_with_the_arm_latent():
    from dataclasses import replace

    from vidpred.config import load_config

    arm, base = load_config("synth-cpu-arm"), load_config("synth-cpu")
    assert arm.model.arm_latent and arm.model.arm_progress and not base.model.arm_latent
    assert arm == replace(base, model=replace(base.model, arm_progress=True, arm_latent=True))
