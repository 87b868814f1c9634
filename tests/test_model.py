"""The model: KL, reparameterisation, codecs, the rollout's two paths, the extras."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vidpred.config import ModelConfig
from vidpred.errors import ConfigError
from vidpred.models import transform
from vidpred.models.codecs import (CondScaleShift, Conv2d, ConvTranspose2d, StepBatchNorm2d, build_codec,
                                   per_step_statistics)
from vidpred.models.recurrent import gaussian_kl, reparameterize
from vidpred.models.svg import ACTION_DIM, SVG, _rollout_stepwise, rollout
from vidpred.models.transform import BACKGROUNDS, CDNAHead, apply_kernels, identity_coords

TINY = dict(width=4, g_dim=16, z_dim=4, rnn_size=16, cond_embed=8)


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{**TINY, **kw})


def batch(B=2, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, 3, 64, 64, generator=g), torch.randn(B, T, 7, generator=g)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(5, 8, generator=g) for _ in range(4))
    ours = gaussian_kl(mu_q, lv_q, mu_p, lv_p)
    ref = kl_divergence(Normal(mu_q, (0.5 * lv_q).exp()), Normal(mu_p, (0.5 * lv_p).exp())).sum(-1)
    assert ours.shape == (5,)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_kl_of_a_distribution_with_itself_is_zero():
    mu, lv = torch.randn(3, 7), torch.randn(3, 7)
    assert gaussian_kl(mu, lv, mu, lv).abs().max() < 1e-6
    assert (gaussian_kl(mu, lv, torch.zeros(3, 7), torch.zeros(3, 7)) > 0).all()


def test_reparameterisation_gradients():
    mu = torch.tensor([0.3, -1.0], requires_grad=True)
    logvar = torch.tensor([0.2, -0.5], requires_grad=True)
    eps = torch.tensor([1.5, -0.7])
    z = reparameterize(mu, logvar, eps)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(2))
    torch.testing.assert_close(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)


@pytest.mark.parametrize("codec,skip_sizes", [("dcgan64", [32, 16, 8, 4]), ("vgg64", [64, 32, 16, 8])])
@pytest.mark.parametrize("width", [4, 8])
def test_codec_shapes(codec, skip_sizes, width):
    enc, dec = build_codec(codec, g_dim=16, width=width, norm="batch")
    x = torch.rand(3, 3, 64, 64)
    h, skips = enc(x)
    assert h.shape == (3, 16)
    assert [s.shape[-1] for s in skips] == skip_sizes
    assert [s.shape[1] for s in skips] == [width, 2 * width, 4 * width, 8 * width]
    y = dec(h, skips)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1  # sigmoid output


@pytest.mark.parametrize("width", [3, 6, 12])
def test_group_norm_fits_widths_that_8_does_not_divide(width):
    model = SVG(tiny(width=width, norm="group", seq_z=2)).eval()
    frames, conds = batch()
    assert rollout(model, frames, conds, 2, noise=torch.zeros(2, 5, model.cfg.noise_dim)).pred.shape == (2, 5, 3, 64, 64)
    codec = {m.num_channels: m.num_groups for m in model.encoder.modules() if isinstance(m, torch.nn.GroupNorm)}
    # the largest divisor up to 8: 12 channels in 6 groups (widths 3 and 6; width 12's first conv has no norm)
    assert codec[24] == 8 and codec[8 * width] == 8
    if width < 12:
        assert codec[12] == 6


@pytest.mark.parametrize("kind, args, shape, product", [
    ("conv", (64, 24, 4, 1, 0), (5, 64, 4, 4), True),  # the encoders' last layer: one product
    ("conv", (64, 24, 3, 1, 1), (5, 64, 4, 4), False),  # padded: PyTorch's convolution
    ("up", (64, 24, 4, 1, 0), (5, 64, 1, 1), True),  # the decoders' first layer: one product
    ("up", (512, 24, 4, 2, 1), (5, 512, 4, 4), True),  # DCGAN's 4 -> 8 at width 32 or more: product and fold
    ("up", (512, 24, 4, 2, 1), (5, 512, 2, 3), True),  # a non-square input through the same fold
    ("up", (256, 24, 4, 2, 1), (5, 256, 4, 4), False),  # too few channels: PyTorch's transposed convolution
])
@pytest.mark.parametrize("bias", [True, False])
def test_matrix_product_convolutions_equal_pytorch_s(kind, args, shape, product, bias, monkeypatch):
    """The codecs' Conv2d / ConvTranspose2d give PyTorch's outputs and gradients on every path."""
    ours_cls, torch_cls = (Conv2d, torch.nn.Conv2d) if kind == "conv" else (ConvTranspose2d, torch.nn.ConvTranspose2d)
    ours, ref = ours_cls(*args, bias=bias), torch_cls(*args, bias=bias)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(*shape)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    calls = []
    torch_forward = torch_cls.forward
    monkeypatch.setattr(torch_cls, "forward", lambda self, *a: calls.append(self) or torch_forward(self, *a))
    ya, yb = ours(xa), ref(xb)
    assert (ours in calls) is not product  # the matrix product where it is one, PyTorch's kernel elsewhere
    assert ya.shape == yb.shape and ya.dtype == yb.dtype
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    if bias:
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)
    ours.matmul = False  # the benchmark's reference: PyTorch's kernel itself
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind, args, shape", [
    ("conv", (64, 24, 4, 1, 0), (5, 64, 4, 4)),
    ("up", (64, 24, 4, 1, 0), (5, 64, 1, 1)),
    ("up", (512, 24, 4, 2, 1), (5, 512, 4, 4)),
])
def test_matrix_product_convolutions_under_bf16_and_channels_last(kind, args, shape):
    """Under bf16 autocast: PyTorch's dtype, and values within bf16 rounding; a channels_last
    model keeps its layout."""
    ours_cls, torch_cls = (Conv2d, torch.nn.Conv2d) if kind == "conv" else (ConvTranspose2d, torch.nn.ConvTranspose2d)
    ours, ref = ours_cls(*args), torch_cls(*args)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(*shape)
    want = ref(x)  # fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb = ours(x), ref(x)
    assert ya.dtype == yb.dtype == torch.bfloat16
    scale = want.abs().max()
    assert (ya.float() - want).abs().max() < 0.02 * scale and (yb.float() - want).abs().max() < 0.02 * scale
    ours, ref = ours.to(memory_format=torch.channels_last), ref.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    ya, yb = ours(xc), ref(xc)
    assert ya.is_contiguous(memory_format=torch.channels_last) == yb.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)


def test_codecs_use_the_matrix_product_convolutions():
    enc, dec = build_codec("dcgan64", g_dim=16, width=32, norm="batch")
    assert isinstance(enc.out.conv, Conv2d) and isinstance(dec.inp.conv, ConvTranspose2d)
    assert isinstance(dec.stages[0][0].conv, ConvTranspose2d) and dec.stages[0][0].conv.in_channels == 512


def test_unknown_codec_is_a_config_error():
    with pytest.raises(ConfigError, match="codec"):
        ModelConfig(codec="resnet")


CDNA = dict(decoder="cdna", kernel_size=3)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(
    "kw",
    [dict(), dict(codec="vgg64"), dict(prior="fixed"), dict(levels=2, align=True, cond_conv="both"),
     CDNA, dict(CDNA, skip_frame="previous"), dict(CDNA, codec="vgg64", skip_frame="previous"),
     dict(CDNA, coords=True, skip_frame="previous"),
     dict(condition="causal", cond_conv="both", levels=2), dict(condition="causal", action_lag=0),
     dict(CDNA, coords=True, skip_frame="previous", condition="causal", action_lag=0, pose_map=True),
     dict(codec="vgg64", pose_map=True, levels=2),
     dict(CDNA, coords=True, skip_frame="previous", condition="causal", action_lag=0, seq_z=3),
     dict(CDNA, coords=True, skip_frame="previous", condition="causal", action_lag=0, pose_map=True,
          arm_shift=True),
     dict(CDNA, pose_map=True, arm_shift=True),
     dict(CDNA, coords=True, pose_map=True, arm_shift=True, arm_gate=True),
     dict(CDNA, pose_map=True, arm_shift=True, arm_gate=True),
     dict(CDNA, coords=True, skip_frame="previous", condition="causal", action_lag=0, pose_map=True,
          arm_shift=True, arm_progress=True),
     dict(CDNA, coords=True, skip_frame="previous", condition="causal", action_lag=0, pose_map=True,
          arm_shift=True, arm_progress=True, arm_latent=True, seq_z=2),
     dict(CDNA, coords=True, skip_frame="previous", condition="causal", action_lag=0, pose_map=True,
          arm_shift=True, momentum=True)],
    ids=["default", "vgg64", "fixed-prior", "extras", "cdna", "cdna-previous", "cdna-vgg64", "cdna-coords",
         "causal-extras", "causal-lag0", "causal-pose-map", "vgg64-pose-map", "sequence-latent",
         "arm-shift-coords", "arm-shift-colours", "arm-gate-coords", "arm-gate-colours", "arm-progress",
         "arm-latent", "momentum"],
)
def test_teacher_forced_batched_rollout_equals_step_by_step(kw, train):
    """The fast path (one encoder pass, one call per LSTM) is the same model as the step loop,
    also in training mode with batch norm (statistics per step in both)."""
    torch.manual_seed(0)
    model = SVG(tiny(**kw)).train(train)
    assert model.cfg.norm == "batch"
    if model.progress is not None:  # a head that moves the arm differently at every step
        torch.nn.init.normal_(model.progress.weight, std=1.0)
    if model.arm is not None:  # and a posterior that does not just read the recorded move
        torch.nn.init.normal_(model.arm.posterior_net[-1].weight, std=1.0)
    frames, conds = batch()
    noise = torch.randn(2, 5, model.cfg.noise_dim)
    fast = rollout(model, frames, conds, 2, noise=noise)
    step_cond, frame_cond, pose = model.embed_conditions(conds, 2)
    LZ = model.cfg.levels * model.cfg.z_dim
    end = LZ + model.cfg.seq_z
    w = model.sequence_latent(frames, 2, noise[:, 0, LZ:end], True)[0] if model.cfg.seq_z else None
    arm = None
    if model.arm is not None:  # as rollout() hands them on: noise, commanded and recorded moves
        arm = (noise[..., end:], pose[:, :, 1] - pose[:, :, 0], conds[:, 1:, ACTION_DIM:] - conds[:, :-1, ACTION_DIM:])
    slow = _rollout_stepwise(model, frames, 2, noise[..., :LZ], step_cond, frame_cond, pose, True, True, w, arm)
    torch.testing.assert_close(fast.pred, slow.pred, rtol=1e-5, atol=1e-5)
    n_kl = model.cfg.levels + int(model.cfg.arm_latent)  # the sequence latent's joins in rollout()
    assert slow.kl.shape[-1] == n_kl and fast.kl.shape[-1] == n_kl + int(model.cfg.seq_z > 0)
    torch.testing.assert_close(fast.kl[..., :n_kl], slow.kl, rtol=1e-5, atol=1e-5)
    assert fast.pred.shape == (2, 5, 3, 64, 64)
    if not model.cfg.arm_progress:
        assert fast.arm is None and slow.arm is None
    else:
        assert fast.arm.shape == (2, 5, 3)
        torch.testing.assert_close(fast.arm, slow.arm, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(), dict(CDNA, skip_frame="previous")], ids=["pixel", "cdna"])
def test_sampling_reads_only_the_past_frames_and_has_no_kl(kw):
    torch.manual_seed(0)
    model = SVG(tiny(**kw)).eval()
    frames, conds = batch()
    other = frames.clone()
    other[:, 2:] = torch.rand_like(other[:, 2:])
    noise = torch.randn(2, 5, 4)
    a = rollout(model, frames, conds, 2, use_posterior=False, noise=noise)
    b = rollout(model, other[:, :2], conds, 2, use_posterior=False, noise=noise)
    torch.testing.assert_close(a.pred, b.pred)
    assert a.kl.abs().max() == 0
    c = rollout(model, frames, conds, 2, use_posterior=False, noise=torch.randn(2, 5, 4))
    assert (a.pred[:, 1:] - c.pred[:, 1:]).abs().max() > 0  # different z -> different futures


def test_predictions_depend_on_the_conditions():
    torch.manual_seed(0)
    model = SVG(tiny()).eval()
    frames, conds = batch()
    noise = torch.zeros(2, 5, 4)
    a = rollout(model, frames, conds, 2, use_posterior=False, noise=noise)
    b = rollout(model, frames, conds + 1.0, 2, use_posterior=False, noise=noise)
    assert (a.pred - b.pred).abs().max() > 1e-6


def test_conditional_convolution_scales_and_shifts_with_the_condition():
    layer = CondScaleShift(cond_dim=3, channels=2)
    y = torch.ones(4, 2, 5, 5)
    c = torch.randn(4, 3)
    torch.testing.assert_close(layer(y, c), y)  # starts as the identity
    with torch.no_grad():
        layer.scale.weight.fill_(0.3)
        layer.shift.weight.fill_(-0.2)
    out = layer(y, c)
    expected_scale = torch.nn.functional.softplus(layer.scale(c))[:, :, None, None]
    expected_shift = layer.shift(c)[:, :, None, None]
    torch.testing.assert_close(out, y * expected_scale + expected_shift)
    assert (out[0] - out[1]).abs().max() > 0  # different conditions, different outputs


def test_conditional_convolution_is_wired_into_the_codecs():
    model = SVG(tiny(cond_conv="both"))
    n_dec = sum(1 for m in model.decoder.modules() if isinstance(m, CondScaleShift))
    n_enc = sum(1 for m in model.encoder.modules() if isinstance(m, CondScaleShift))
    assert n_dec >= 4 and n_enc >= 4
    assert not any(isinstance(m, CondScaleShift) for m in SVG(tiny()).modules())


def test_hierarchical_latents_have_one_kl_term_per_level():
    torch.manual_seed(0)
    model = SVG(tiny(levels=3, align=True))
    frames, conds = batch()
    out = rollout(model, frames, conds, 2)
    assert out.kl.shape == (2, 5, 3)
    assert (out.kl > 0).all()
    assert len(model.posterior) == 3 and len(model.prior) == 3 and len(model.inject) == 2
    # the lower levels reach the decoder: changing only their noise changes the frame
    noise = torch.zeros(2, 5, 12)
    a = rollout(model.eval(), frames, conds, 2, noise=noise)
    noise[..., 4:] = 3.0
    b = rollout(model, frames, conds, 2, noise=noise)
    assert (a.pred - b.pred).abs().max() > 1e-6


# the pixel decoder: an untrained transformation decoder copies the previous frame whatever w is
SEQ = dict(condition="causal", action_lag=0, pose_map=True, seq_z=3)


@pytest.mark.parametrize("teacher_forcing", [True, False], ids=["teacher-forced", "free-running"])
def test_sequence_latent_reads_the_window_s_last_frame_in_training_only(teacher_forcing):
    """w is inferred from the last observed and the last frame of the window: in training, a
    different ending changes the prediction of the first future frame already (through w),
    and the KL of w is one more level, equal at every step, summing to KL(q(w) || N(0, I))."""
    torch.manual_seed(0)
    model = SVG(tiny(**SEQ)).eval()
    frames, conds = batch()
    other = frames.clone()
    other[:, -1] = 0.0  # the window ends on a black frame
    noise = torch.randn(2, 5, model.cfg.noise_dim)
    a = rollout(model, frames, conds, 2, noise=noise, teacher_forcing=teacher_forcing)
    b = rollout(model, other, conds, 2, noise=noise, teacher_forcing=teacher_forcing)
    assert (a.pred[:, 1] - b.pred[:, 1]).abs().max() > 1e-6  # frame 2, predicted before frame 5 is seen
    assert a.kl.shape == (2, 5, 2)
    torch.testing.assert_close(a.kl[..., 1], a.kl[:, :1, 1].expand(2, 5))
    mu, logvar = model.seq_posterior(frames[:, 1], frames[:, -1])
    torch.testing.assert_close(a.kl[..., 1].sum(1), gaussian_kl(mu, logvar, 0 * mu, 0 * logvar))
    assert (a.kl[..., 1] > 0).all()


def test_sampled_sequence_latent_is_its_noise_held_for_the_whole_window():
    torch.manual_seed(0)
    model = SVG(tiny(**SEQ)).eval()
    frames, conds = batch()
    noise = torch.randn(2, 5, model.cfg.noise_dim)
    a = rollout(model, frames[:, :2], conds, 2, use_posterior=False, noise=noise)
    assert a.kl.shape == (2, 5, 2) and a.kl.abs().max() == 0
    later = noise.clone()
    later[:, 1:, 4:] = torch.randn(2, 4, 3)  # w's noise is read from the first step's row only
    torch.testing.assert_close(rollout(model, frames[:, :2], conds, 2, use_posterior=False, noise=later).pred, a.pred)
    other = noise.clone()
    other[:, 0, 4:] += 10.0  # far from the first draw: an untrained model responds weakly to w
    b = rollout(model, frames[:, :2], conds, 2, use_posterior=False, noise=other)
    assert ((a.pred - b.pred).flatten(2).abs().amax(-1) > 1e-6).all()  # another w changes every step
    with pytest.raises(ConfigError, match="seq_z"):
        ModelConfig(seq_z=-1)


def test_aligner_starts_as_identity_warp():
    torch.manual_seed(0)
    model = SVG(tiny(levels=2, align=True)).eval()
    skip = torch.rand(3, 4, 16, 16)
    g = torch.randn(3, 16)
    torch.testing.assert_close(model._align([skip], g)[0], skip, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.flow.bias.fill_(0.2)  # a uniform shift moves the features
    assert (model._align([skip], g)[0] - skip).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kw",
    [dict(prior="fixed"), dict(), dict(cond_conv="decoder"), dict(levels=2, align=True), dict(codec="vgg64"),
     dict(CDNA, skip_frame="previous"), dict(CDNA, coords=True, skip_frame="previous"), dict(seq_z=2)],
    ids=["fixed-prior", "learned-prior", "cond-conv", "hierarchical", "vgg64", "cdna", "cdna-coords",
         "sequence-latent"],
)
def test_overfits_one_batch(kw):
    torch.manual_seed(0)
    model = SVG(tiny(**kw))
    frames, conds = batch(B=2, T=5, seed=1)
    frames = torch.nn.functional.avg_pool2d(frames.flatten(0, 1), 9, 1, 4).view_as(frames)  # learnable
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = rollout(model, frames, conds, 2, noise=torch.zeros(2, 4, model.cfg.noise_dim))
        mse = ((out.pred - frames[:, 1:]) ** 2).mean()
        loss = mse + 1e-4 * out.kl.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(mse.item())
    # the transformation decoder starts as "copy the previous frame", already a good guess here
    assert losses[-1] < (0.35 if model.cfg.decoder == "cdna" else 0.25) * losses[0], (losses[0], losses[-1])


# -- batch norm per time step ------------------------------------------------------


def test_step_batch_norm_normalises_each_step_over_its_own_batch():
    torch.manual_seed(0)
    B, S, C = 3, 4, 2
    bn = StepBatchNorm2d(C).train()
    x = torch.randn(B, S, C, 5, 5) * torch.arange(1, S + 1).view(1, S, 1, 1, 1)  # steps differ in scale
    with per_step_statistics(bn, S):
        y = bn(x.flatten(0, 1)).view(B, S, C, 5, 5)
    for s in range(S):  # the same as plain batch norm on that step's B frames
        ref = torch.nn.functional.batch_norm(x[:, s], None, None, training=True, eps=bn.eps)
        torch.testing.assert_close(y[:, s], ref, rtol=1e-5, atol=1e-5)
    # running averages moved by the mean of the per-step statistics
    step_means = x.mean(dim=(0, 3, 4))  # (S, C)
    torch.testing.assert_close(bn.running_mean, 0.1 * step_means.mean(0), rtol=1e-5, atol=1e-6)
    assert bn.steps == 1  # the context is left as found
    plain = torch.nn.functional.batch_norm(x.flatten(0, 1), None, None, training=True, eps=bn.eps)
    assert (plain.view_as(y) - y).abs().max() > 0.1  # pooled statistics would differ


def test_step_batch_norm_keeps_channels_last():
    """A channels_last model gets channels_last back (values as for NCHW input)."""
    torch.manual_seed(0)
    bn = StepBatchNorm2d(4).train()
    x = torch.randn(6, 4, 5, 5)
    with per_step_statistics(bn, 3):
        ref = bn(x)
        y = bn(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    assert ref.is_contiguous()
    torch.testing.assert_close(y, ref)


# -- the transformation (CDNA) decoder ------------------------------------------------


def test_identity_kernel_reproduces_the_image_and_a_shifted_one_shifts_it():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 16, 16, generator=g)
    kernels = torch.zeros(2, 2, 5, 5)
    kernels[:, 0, 2, 2] = 1.0  # identity
    kernels[:, 1, 2, 3] = 1.0  # one tap right of the centre: reads x+1, moves the image left
    out = apply_kernels(image, kernels)
    assert out.shape == (2, 2, 3, 16, 16)
    torch.testing.assert_close(out[:, 0], image)
    torch.testing.assert_close(out[:, 1, ..., :-1], image[..., 1:])
    torch.testing.assert_close(out[:, 1, ..., -1], image[..., -1])  # border replicated


def test_untrained_cdna_model_predicts_the_previous_frame(synth_root):
    """Identity-initialised kernels and the previous-frame mask: 'nothing moves' at the start."""
    from vidpred.data import open_split

    ds = open_split(synth_root, "train", window=6, random_start=False)
    frames = torch.stack([ds[i][0] for i in range(2)])
    conds = torch.stack([ds[i][1] for i in range(2)])
    torch.manual_seed(0)
    head = CDNAHead(g_dim=16, kernels=4, kernel_size=5)
    kern = head.kernels(torch.randn(7, 16))
    torch.testing.assert_close(kern.sum((-1, -2)), torch.ones(7, 4))
    assert (kern[..., 2, 2] > 0.85).all()  # mass on the centre tap
    model = SVG(tiny(decoder="cdna")).eval()
    out = rollout(model, frames, conds, 2, use_posterior=False, noise=torch.zeros(2, 5, 4))
    prev_err = (out.pred[:, 0] - frames[:, 0]).abs().mean()
    assert prev_err < 0.01, prev_err
    # ... and each later prediction repeats the one before (the free run starts as copy-last)
    assert (out.pred[:, 2:] - out.pred[:, 1:-1]).abs().mean() < 0.01


def test_a_known_shift_is_learnable():
    """Kernels predicted from g learn to move a frame by one pixel. The masks may only pick
    candidates (one learnable weight per candidate, the same at every pixel) and the generated
    image is a fixed grey, so moving the pixels is the only way to fit the target."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    image = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 24, 24, generator=g), 3, 1, 1)
    target = torch.roll(image, shifts=1, dims=-1)  # content moves one pixel right
    head = CDNAHead(g_dim=8, kernels=2, kernel_size=5)
    code = torch.randn(4, 8)
    pick = torch.zeros(1, head.n_masks, 1, 1, requires_grad=True)
    opt = torch.optim.Adam([*head.parameters(), pick], lr=0.1)
    losses = []
    for _ in range(200):
        raw = torch.cat([torch.zeros(4, 3, 24, 24), pick.expand(4, -1, 24, 24)], 1)
        out, masks = head(code, raw, image, image, image)
        loss = ((out - target)[..., 2:-2, 2:-2] ** 2).mean()  # borders: replicated, not rolled
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.01 * losses[0], (losses[0], losses[-1])
    # the masks chose a kernel, and it puts its mass one tap left of the centre (reads x-1)
    used = int(masks[0, : head.n_kernels, 0, 0].argmax())
    assert masks[0, used, 0, 0] > 0.9
    kern = head.kernels(code)[:, used]  # (4, 5, 5)
    assert (kern[:, 2, 1] > 0.8).all(), kern


def _flow_raw(head, N, H, W, flow_px=(0.0, 0.0), pick="flow"):
    """Decoder output that puts all mask weight on one candidate and a constant flow (px)."""
    raw = torch.zeros(N, head.decoder_channels, H, W)
    raw[:, 3:3 + head.n_masks] = -50.0
    index = head.n_kernels if pick == "flow" else head.n_moved + BACKGROUNDS.index(pick)
    raw[:, 3 + index] = 50.0
    for i, v in enumerate(flow_px):  # inverse of FLOW_MAX_PX * tanh, at flow_gain 1
        raw[:, 3 + head.n_masks + i] = torch.atanh(torch.tensor(v / transform.FLOW_MAX_PX))
    return raw


@pytest.mark.parametrize("coords", [False, True], ids=["colours", "coords"])
def test_flow_candidate_starts_as_the_identity_and_moves_by_its_flow(coords):
    """model.flow: one more moved candidate, the previous frame read at pixel + flow. At the
    start (flow_gain 0) it is the previous frame whatever the decoder says; with a flow of
    (+3, -2) px every pixel reads 3 px right and 2 px up, so the content moves left and down."""
    torch.manual_seed(0)
    head = CDNAHead(g_dim=8, kernels=2, kernel_size=5, flow=True)
    assert head.n_moved == 3 and head.n_masks == 3 + len(BACKGROUNDS)
    assert head.decoder_channels == 3 + head.n_masks + 2
    assert head.flow_gain.item() == 0.0
    # the previous frame's head start sits on its own mask, after the flow candidate's
    want_bias = torch.zeros(head.n_masks)
    want_bias[head.n_moved + BACKGROUNDS.index("previous")] = transform.PREVIOUS_MASK_BIAS
    torch.testing.assert_close(head.mask_bias.detach(), want_bias)
    N, H, W = 2, 16, 16
    image, g = torch.rand(N, 3, H, W), torch.randn(N, 8)

    def run(raw):
        if coords:  # ref = the image, coords = the identity: the same frame as colour mode
            return head.forward_coords(g, raw, image, image, image, image, identity_coords(N, H, W, "cpu"))[0]
        return head(g, raw, image, image, image)[0]

    raw = _flow_raw(head, N, H, W, flow_px=(3.0, -2.0))
    raw[:, 3 + head.n_masks:] += torch.randn(N, 2, H, W)  # any flow logits: the gain is 0
    torch.testing.assert_close(run(raw), image)
    with torch.no_grad():
        head.flow_gain.fill_(1.0)
    out = run(_flow_raw(head, N, H, W, flow_px=(3.0, -2.0)))
    torch.testing.assert_close(out[..., 2:, :-3], image[..., :-2, 3:])
    torch.testing.assert_close(out[..., 0, :-3], image[..., 0, 3:])  # the top row: border replicated
    # the previous-frame background is still its own candidate, untouched by the flow
    torch.testing.assert_close(run(_flow_raw(head, N, H, W, (3.0, -2.0), pick="previous")), image)


@pytest.mark.parametrize("coords", [False, True], ids=["colours", "coords"])
def test_arm_candidate_moves_the_previous_frame_by_the_arm_s_shift(coords):
    """model.arm_shift: one more moved candidate, after the kernels', the previous frame moved
    as a whole by the shift it is given (the arm's move in grid units): +3 px right, -2 px
    (up) moves the content right and up; the other candidates do not see the shift."""
    torch.manual_seed(0)
    head = CDNAHead(g_dim=8, kernels=2, kernel_size=5, arm=True)
    assert head.n_moved == 3 and head.n_masks == 3 + len(BACKGROUNDS)
    assert head.decoder_channels == 3 + head.n_masks  # no flow channels
    N, H, W = 2, 16, 16
    image, g = torch.rand(N, 3, H, W), torch.randn(N, 8)
    shift = torch.tensor([[3.0 * 2 / W, -2.0 * 2 / H]]).expand(N, 2)  # px -> grid units

    def run(pick, shift=shift, coords_out=False):
        raw = torch.full((N, head.decoder_channels, H, W), 0.0)
        raw[:, 3:3 + head.n_masks] = -50.0
        raw[:, 3 + pick] = 50.0
        if coords:
            out = head.forward_coords(g, raw, image, image, image, image, identity_coords(N, H, W, "cpu"), shift)
            return out[2] if coords_out else out[0]
        return head(g, raw, image, image, image, shift)[0]

    out = run(head.n_kernels)
    if coords:  # the next step starts from the moved coordinates: the shift is carried on
        ident = identity_coords(N, H, W, "cpu")
        torch.testing.assert_close(run(head.n_kernels, coords_out=True)[..., :-2, 3:],
                                   (ident - shift[:, :, None, None])[..., :-2, 3:])
    torch.testing.assert_close(out[..., :-2, 3:], image[..., 2:, :-3])
    torch.testing.assert_close(out[..., -1, 3:], image[..., -1, :-3])  # the bottom row: border replicated
    # no shift, no move; the previous-frame background is untouched by the shift
    torch.testing.assert_close(run(head.n_kernels, torch.zeros(N, 2)), image)
    torch.testing.assert_close(run(head.n_moved + BACKGROUNDS.index("previous")), image)
    with pytest.raises(ValueError, match="shift"):
        run(head.n_kernels, None)


@pytest.mark.parametrize("gate", [False, True], ids=["shift", "gated"])
def test_arm_shift_is_the_pose_maps_displacement_and_needs_them(gate):
    """The model's shift is the move between the step's two end-effector positions through the
    pose maps' position-to-grid map: 0.25 of the table to the right is 0.5 grid units. The gate's
    origin is the first of the two positions (the table's centre is the grid's 0)."""
    model = SVG(tiny(**CDNA, pose_map=True, arm_shift=True, arm_gate=gate)).eval()
    seen, origins = [], []
    move = model.transform.move

    def spy(image, g, raw, shift=None, origin=None):
        seen.append(shift)
        origins.append(origin)
        return move(image, g, raw, shift, origin)

    model.transform.move = spy
    frames, conds = batch()
    conds = conds.clone()
    conds[..., ACTION_DIM:ACTION_DIM + 2] = 0.5
    conds[:, 3:, ACTION_DIM] = 0.75  # the arm jumps a quarter of the table right at frame 3
    with torch.no_grad():
        rollout(model, frames, conds, 2)  # steps 1..5 predict frames 1..5
    assert len(seen) == 1  # teacher forced: one batched decode, (B * 5) shifts
    shifts = seen[0].view(2, 5, 2)
    want = torch.zeros(2, 5, 2)
    want[:, 2, 0] = 0.5  # frame 2 -> 3
    torch.testing.assert_close(shifts, want)
    start = torch.zeros(2, 5, 2)
    start[:, 3:, 0] = 0.5  # from frame 3 on the arm starts each step a quarter of the table right
    torch.testing.assert_close(origins[0].view(2, 5, 2), start)
    for kw in (dict(pose_map=True), dict(CDNA)):
        with pytest.raises(ConfigError, match="arm_shift"):
            tiny(**kw, arm_shift=True)
    with pytest.raises(ConfigError, match="arm_gate.*arm_shift=true"):
        tiny(**CDNA, pose_map=True, arm_gate=True)


def test_the_arm_shift_stays_fp32_under_bf16_autocast():
    """bf16 holds about 3 significant digits: a step of a thousandth of the table (0.064 px)
    from 0.6 would round to a multiple of 1/128 grid units. Under autocast the shift and its
    origin are still computed in fp32, equal to the run without autocast."""
    model = SVG(tiny(**CDNA, pose_map=True, arm_shift=True, arm_gate=True)).eval()
    seen = []
    move = model.transform.move

    def spy(image, g, raw, shift=None, origin=None):
        seen.append((shift, origin))
        return move(image, g, raw, shift, origin)

    model.transform.move = spy
    frames, conds = batch()
    conds = conds.clone()
    conds[..., ACTION_DIM:ACTION_DIM + 2] = 0.6 + 0.001 * torch.arange(6.0)[None, :, None]
    with torch.no_grad():
        rollout(model, frames, conds, 2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rollout(model, frames, conds, 2)
    (shift, origin), (shift16, origin16) = seen
    assert shift16.dtype == origin16.dtype == torch.float32
    torch.testing.assert_close(shift16, shift, rtol=0, atol=1e-6)
    torch.testing.assert_close(origin16, origin, rtol=0, atol=1e-6)
    torch.testing.assert_close(shift, torch.full_like(shift, 0.002), rtol=0, atol=1e-5)


@pytest.mark.parametrize("coords", [False, True], ids=["colours", "coords"])
def test_the_arm_gate_moves_what_is_ahead_of_the_gripper_and_keeps_what_is_behind(coords):
    """model.arm_gate: one more candidate after the ungated arm shift. The gripper at column 8
    moves 2 px right. Columns ahead of it and beside it (to 3 px behind its centre, the gate's
    starting margin) take the shifted image, columns further behind keep the previous frame: an
    arm that pulls away drags nothing. The other way round the gate flips; at rest the candidate
    is the previous frame; without the arm's position the gated head refuses."""
    torch.manual_seed(0)
    head = CDNAHead(g_dim=8, kernels=2, kernel_size=5, arm=True, arm_gate=True)
    assert head.n_moved == 4 and head.n_masks == 4 + len(BACKGROUNDS)
    N, H, W = 1, 16, 16
    image, g = torch.rand(N, 3, H, W), torch.randn(N, 8)
    px = 2.0 / W  # one pixel in grid units
    centre = identity_coords(1, H, W, "cpu")[0, :, 8, 8][None]  # the gripper at row 8, column 8

    def run(dx, origin=centre, pick=head.n_kernels + 1):  # the gated arm candidate (after the ungated one)
        raw = torch.full((N, head.decoder_channels, H, W), -50.0)
        raw[:, 3 + pick] = 50.0
        shift = torch.tensor([[dx * px, 0.0]])
        if coords:
            ident = identity_coords(N, H, W, "cpu")
            return head.forward_coords(g, raw, image, image, image, image, ident, shift, origin)[0]
        return head(g, raw, image, image, image, shift, origin)[0]

    out = run(2.0)
    # the gate's edge is soft (0.5 px): within 0.3% of either side from 3 px off the margin
    close = dict(atol=3e-3, rtol=0)
    torch.testing.assert_close(out[..., 9:], image[..., 7:-2], **close)  # ahead of the centre: shifted
    torch.testing.assert_close(out[..., :2], image[..., :2], **close)  # 7+ px behind: kept
    assert (out[..., 9:] - image[..., 9:]).abs().max() > 0.5  # and the two differ there
    back = run(-2.0)  # pulling left: the columns right of the gripper stay, the left ones move
    torch.testing.assert_close(back[..., 14:], image[..., 14:], **close)
    torch.testing.assert_close(back[..., 1:8], image[..., 3:10], **close)
    torch.testing.assert_close(run(0.0), image)
    # the ungated candidate still moves everything, behind the gripper too
    torch.testing.assert_close(run(2.0, pick=head.n_kernels)[..., 2:], image[..., :-2], **close)
    with pytest.raises(ValueError, match="position"):
        run(2.0, None)


def test_the_arm_gate_map_in_pixels_on_a_wide_frame():
    """The gate against a formula in pixels, on a frame wider than tall, for a diagonal move
    (3 px right, 4 px down) from an origin off the diagonal (column 14, row 6): an x/y or a
    width/height mix-up changes the map. The margin learns (it gets a gradient), and at rest the
    gate is open everywhere with a bounded gradient for the move."""
    head = CDNAHead(g_dim=8, kernels=2, kernel_size=5, arm=True, arm_gate=True)
    H, W = 12, 20
    origin = identity_coords(1, H, W, "cpu")[0, :, 6, 14][None]  # (x, y) of that pixel's centre
    move_px = torch.tensor([3.0, 4.0])
    shift = (move_px * torch.tensor([2.0 / W, 2.0 / H]))[None].requires_grad_()
    gate = head.arm_gate(shift, origin, H, W)[0, 0]
    rows, cols = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    unit = move_px / math.sqrt(25.0 + 0.25**2)
    ahead = (cols - 14.5) * unit[0] + (rows - 6.5) * unit[1]  # px along the move from the gripper
    torch.testing.assert_close(gate, torch.sigmoid((ahead + 3.0) / 0.5))
    assert gate[2, 11] < 0.02 and gate[10, 17] > 0.99  # 5 px behind it, 5 px ahead of it
    gate.sum().backward()
    assert head.arm_margin.grad is not None and head.arm_margin.grad.abs() > 0
    rest = torch.zeros(1, 2, requires_grad=True)
    open_ = head.arm_gate(rest, origin, H, W)
    assert open_.min() > 0.99  # sigmoid(3 / 0.5): nothing moves, nothing is held back
    open_.sum().backward()
    assert torch.isfinite(rest.grad).all() and rest.grad.abs().max() < 1e4


def test_a_shift_beyond_the_kernels_reach_is_learnable_with_the_flow():
    """Content moves 4 px right: farther than a 5x5 kernel reaches (2 px). With model.flow the
    head fits it: the masks (one learnable weight per candidate) pick the flow candidate, and
    the flow (a learnable constant field) reads 4 px to the left. The content is smooth over
    7 px, as the world's objects are over their size: a photometric loss only steers a flow
    over distances where the image is correlated (with 3 px blobs it settles on a blend)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    image = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 24, 24, generator=g), 7, 1, 3, count_include_pad=False)
    target = torch.roll(image, shifts=4, dims=-1)
    head = CDNAHead(g_dim=8, kernels=2, kernel_size=5, flow=True)
    code = torch.randn(4, 8)
    pick = torch.zeros(1, head.n_masks, 1, 1, requires_grad=True)
    # flow logits as a decoder gives them at the start: not exactly 0 (at tanh(0) = 0 with a zero
    # gain neither the gain nor the logits would get a gradient)
    flow = torch.full((1, 2, 1, 1), 0.1, requires_grad=True)
    opt = torch.optim.Adam([*head.parameters(), pick, flow], lr=0.05)
    losses = []
    for _ in range(300):
        raw = torch.cat([torch.zeros(4, 3, 24, 24), pick.expand(4, -1, 24, 24), flow.expand(4, -1, 24, 24)], 1)
        out, masks = head(code, raw, image, image, image)
        loss = ((out - target)[..., 4:-4] ** 2).mean()  # columns a roll wraps or the border replicates
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.01 * losses[0], (losses[0], losses[-1])
    assert masks[0, head.n_kernels, 0, 0] > 0.9  # the flow candidate
    flow_px = head.flow_gain * transform.FLOW_MAX_PX * torch.tanh(flow)
    assert abs(flow_px[0, 0].item() + 4.0) < 0.2 and abs(flow_px[0, 1].item()) < 0.2, flow_px.flatten()


def test_cdna_model_with_flow_starts_as_copy_last_and_is_checked(synth_root):
    """A whole model with model.flow builds, and untrained it predicts the previous frame."""
    from vidpred.data import open_split

    ds = open_split(synth_root, "train", window=6, random_start=False)
    frames = torch.stack([ds[i][0] for i in range(2)])
    conds = torch.stack([ds[i][1] for i in range(2)])
    torch.manual_seed(0)
    model = SVG(tiny(decoder="cdna", flow=True, coords=True)).eval()
    assert model.decoder.stages[-1][-1].conv.out_channels == model.transform.decoder_channels
    out = rollout(model, frames, conds, 2, use_posterior=False, noise=torch.zeros(2, 5, 4))
    assert (out.pred[:, 0] - frames[:, 0]).abs().mean() < 0.01
    assert (out.pred[:, 2:] - out.pred[:, 1:-1]).abs().mean() < 0.01
    with pytest.raises(ConfigError, match="model.flow needs the transformation decoder"):
        ModelConfig(flow=True)


def test_cdna_masks_cover_every_candidate_and_config_is_checked():
    head = CDNAHead(g_dim=8, kernels=3, kernel_size=5)
    assert head.n_masks == 3 + len(BACKGROUNDS) and head.decoder_channels == 3 + 3 + len(BACKGROUNDS)
    model = SVG(tiny(decoder="cdna", kernels=3))
    assert model.decoder.stages[-1][-1].conv.out_channels == head.decoder_channels
    with pytest.raises(ConfigError, match="kernel_size"):
        ModelConfig(decoder="cdna", kernel_size=4)
    with pytest.raises(ConfigError, match="decoder"):
        ModelConfig(decoder="flow")


@pytest.mark.parametrize("use_posterior", [False, True], ids=["sampling", "free-running-training"])
def test_cdna_free_run_moves_its_own_predictions(use_posterior):
    """Without teacher forcing, the frame the kernels move is the model's previous prediction
    (after the observed frames), and the backgrounds are the observed frames."""
    torch.manual_seed(0)
    model = SVG(tiny(**CDNA, skip_frame="previous")).eval()
    frames, conds = batch()
    seen = []
    original = model.transform.forward

    def spy(g, raw, previous, first, last_observed, shift=None, origin=None):
        seen.append((previous.clone(), first.clone(), last_observed.clone()))
        return original(g, raw, previous, first, last_observed, shift, origin)

    model.transform.forward = spy
    out = rollout(model, frames, conds, 2, use_posterior=use_posterior, teacher_forcing=False,
                  noise=torch.randn(2, 5, 4))
    assert len(seen) == 5  # one call per step
    for t, (previous, first, last) in enumerate(seen, start=1):  # step t predicts frame t
        expected = frames[:, t - 1] if t - 1 < 2 else out.pred[:, t - 2]
        torch.testing.assert_close(previous, expected)
        torch.testing.assert_close(first, frames[:, 0])
        torch.testing.assert_close(last, frames[:, min(t - 1, 1)])


def test_kl_is_computed_in_fp32_under_bf16_autocast():
    """A collapsed posterior (q = p: same weights, and a still scene so that x_t = x_{t-1}) has a
    KL of 0; computed in bf16 it rounds to negative values, in fp32 it stays >= 0."""
    torch.manual_seed(0)
    model = SVG(tiny())
    model.posterior.load_state_dict(model.prior.state_dict())
    frames, conds = batch()
    frames = frames[:, :1].expand_as(frames).contiguous()  # the same frame at every step
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rollout(model, frames, conds, 2, noise=torch.randn(2, 5, 4))
    assert out.kl.dtype == torch.float32
    assert (out.kl >= 0).all() and out.kl.abs().max() < 1e-3



def _coordinates_of_a_free_run(**kw):
    """A tiny coordinate-mode model's free run (2 observed frames, 4 predicted): the batch's frames and,
    per step, what forward_coords got and gave: (ref, coords, before or None, the coords it returned)."""
    torch.manual_seed(0)
    model = SVG(tiny(**CDNA, coords=True, skip_frame="previous", **kw)).eval()
    frames, conds = batch()
    seen = []
    original = model.transform.forward_coords

    def spy(g, raw, previous, first, last_observed, ref, coords, shift=None, origin=None, before=None):
        out = original(g, raw, previous, first, last_observed, ref, coords, shift, origin, before)
        seen.append((ref.clone(), coords.clone(), None if before is None else before.clone(), out[2].clone()))
        return out

    model.transform.forward_coords = spy
    rollout(model, frames, conds, 2, use_posterior=False, noise=torch.randn(2, 5, 4))
    return frames, seen


def test_coordinates_mode_samples_the_last_observed_frame_and_chains_its_coordinates():
    """model.coords: in a free run every prediction's moved pixels are read from the last
    observed frame at coordinates carried from step to step; identity coordinates give the frame back."""
    image = torch.rand(2, 3, 16, 16)
    grid = identity_coords(2, 16, 16, image.device).permute(0, 2, 3, 1)
    same = torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(same, image)

    frames, seen = _coordinates_of_a_free_run()
    ident = identity_coords(2, 64, 64, frames.device)
    for t, (ref, coords, _, coords_out) in enumerate(seen, start=1):  # step t predicts frame t
        torch.testing.assert_close(ref, frames[:, min(t - 1, 1)])  # x_{t-1} while observed, then x_1
        if t <= 2:
            torch.testing.assert_close(coords, ident)
        else:
            torch.testing.assert_close(coords, seen[t - 2][3])  # the previous step's coordinates
    assert (seen[-1][3] - ident).abs().max() > 0  # they did move
    with pytest.raises(ConfigError, match="model.coords"):
        ModelConfig(coords=True)


def test_momentum_candidate_repeats_the_last_step_s_motion():
    """model.momentum: one more moved candidate, the coordinates extrapolated at constant velocity:
    content that moved 1 px right and 2 px down in the last step moves as much again; without a
    motion before (before = coords, as after a ground-truth frame) it is the previous frame."""
    torch.manual_seed(0)
    head = CDNAHead(g_dim=8, kernels=2, kernel_size=5, momentum=True)
    assert head.n_moved == 3 and head.n_masks == 3 + len(BACKGROUNDS)
    N, H, W = 2, 16, 16
    ref, g = torch.rand(N, 3, H, W), torch.randn(N, 8)
    ident = identity_coords(N, H, W, "cpu")
    step = torch.tensor([1.0 * 2 / W, 2.0 * 2 / H]).view(1, 2, 1, 1)  # px -> grid units
    coords = ident - step  # the previous frame: ref moved 1 px right, 2 px down
    raw = torch.full((N, head.decoder_channels, H, W), -50.0)
    raw[:, 3 + head.n_kernels] = 50.0  # every pixel from the momentum candidate
    frame, _, coords_t = head.forward_coords(g, raw, ref, ref, ref, ref, coords, before=ident)
    torch.testing.assert_close(coords_t, ident - 2 * step)
    torch.testing.assert_close(frame[..., 4:, 2:], ref[..., :-4, :-2])  # moved twice as far
    still, _, _ = head.forward_coords(g, raw, ref, ref, ref, ref, coords, before=coords)
    previous, _, _ = head.forward_coords(g, raw, ref, ref, ref, ref, coords, before=None)
    torch.testing.assert_close(still, previous)
    torch.testing.assert_close(still[..., 2:, 1:], ref[..., :-2, :-1])  # where the previous frame had it
    with pytest.raises(ValueError, match="forward_coords"):
        head(g, raw, ref, ref, ref)
    with pytest.raises(ConfigError, match="model.momentum"):
        ModelConfig(decoder="cdna", momentum=True)


def test_momentum_reads_the_coordinates_of_the_frame_before_in_a_free_run():
    """In the step loop the momentum candidate gets the coordinates of x_{t-2}: the identity while
    x_{t-1} is observed (no motion known), then the previous step's input coordinates."""
    frames, seen = _coordinates_of_a_free_run(momentum=True)
    ident = identity_coords(2, 64, 64, frames.device)
    for t, (_, coords, before, _) in enumerate(seen, start=1):
        if t <= 2:
            torch.testing.assert_close(before, ident)
        else:
            torch.testing.assert_close(before, seen[t - 2][1])  # the coordinates the step before read
            torch.testing.assert_close(coords, seen[t - 2][3])
    assert (seen[-1][2] - seen[-1][1]).abs().max() > 0  # a motion to repeat


@pytest.mark.parametrize("lag", [0, 1])
def test_causal_condition_is_action_and_dead_reckoned_positions(lag):
    torch.manual_seed(0)
    model = SVG(tiny(condition="causal", action_lag=lag))
    conds = torch.randn(1, 6, 7)
    frame, observed = torch.tensor([1, 4, 5, 1]), torch.tensor([0, 1, 1, 1])
    got = model.causal_conditions(conds, frame, observed)[0]  # stats are 0 / 1: raw values

    def reckoned(f, o):  # last observed position plus the moves a_{k - lag}, k = o+1..f
        if f < o:  # a frame already observed: its recorded position
            return conds[0, max(f, 0), 4:]
        moves = sum((conds[0, k - lag, :3] for k in range(o + 1, f + 1)), torch.zeros(3))
        return conds[0, o, 4:] + moves

    for row, (f, o) in enumerate(zip(frame.tolist(), observed.tolist())):
        torch.testing.assert_close(got[row, :4], conds[0, f - lag, :4])
        torch.testing.assert_close(got[row, 4:7], reckoned(f - 1, o))
        torch.testing.assert_close(got[row, 7:], reckoned(f, o))
    torch.testing.assert_close(got[3, 7:], conds[0, 1, 4:])  # an observed frame: its recorded position
    # encoding an observed frame (cond_conv=both): the recorded positions of it and of the frame before
    enc = model.causal_conditions(conds, torch.tensor([0, 1]), torch.tensor([0, 1]))[0]
    torch.testing.assert_close(enc[1, 4:7], conds[0, 0, 4:])
    torch.testing.assert_close(enc[1, 7:], conds[0, 1, 4:])
    torch.testing.assert_close(enc[0, 4:7], conds[0, 0, 4:])  # before the window: frame 0's own
    if lag == 1:  # frame 0 has no action in the window: the mean (0 after normalisation)
        assert enc[0, :4].abs().max() == 0


@pytest.mark.parametrize("kw", [dict(), dict(cond_conv="both"), dict(CDNA, skip_frame="previous", coords=True),
                                dict(CDNA, skip_frame="previous", coords=True, pose_map=True)],
                         ids=["pixel", "cond-conv", "cdna-coords", "pose-map"])
@pytest.mark.parametrize("lag", [0, 1])
def test_causal_predictions_read_future_actions_but_no_future_position(kw, lag):
    """A planner knows the actions it will take, not where the arm will be: with
    condition=causal the future end-effector positions change nothing, the future actions
    change the prediction; with condition=lab the future positions leak in."""
    torch.manual_seed(0)
    model = SVG(tiny(condition="causal", action_lag=lag, **kw)).eval()
    frames, conds = batch()
    noise = torch.randn(2, 5, 4)
    moved = conds.clone()
    moved[:, 2:, 4:] += 5.0  # positions of the frames to predict
    acted = conds.clone()
    acted[:, 3, :4] += 5.0  # one future action
    for posterior, forced in ((False, False), (True, True), (True, False)):  # sampling, training, posterior free run
        run = lambda c: rollout(model, frames, c, 2, use_posterior=posterior, teacher_forcing=forced,  # noqa: E731
                                noise=noise).pred
        torch.testing.assert_close(run(moved), run(conds))
        assert (run(acted) - run(conds)).abs().max() > 1e-7  # exactly 0 if the action were not read
    lab = SVG(tiny(**kw)).eval()
    assert (rollout(lab, frames, moved, 2, use_posterior=False, noise=noise).pred
            - rollout(lab, frames, conds, 2, use_posterior=False, noise=noise).pred).abs().max() > 1e-7


def test_causal_config_is_checked():
    with pytest.raises(ConfigError, match="model.action_lag"):
        tiny(condition="causal", action_lag=2)
    for dim in (4, 6, 8):
        with pytest.raises(ConfigError, match="model.cond_dim must be 7"):
            tiny(condition="causal", cond_dim=dim)
    with pytest.raises(ConfigError, match="model.condition"):
        tiny(condition="future")


def test_pose_map_draws_each_position_where_the_synthetic_world_renders_it():
    """The heat maps peak at the pixel of the table position (x, y in table fractions, as the
    synthetic world's renderer draws them), at every decoder scale; z changes nothing."""
    pose = SVG(tiny(decoder="cdna", pose_map=True)).pose
    positions = torch.tensor([[[0.25, 0.75, 0.0], [0.5, 0.125, 0.14]]])  # (1, 2, 3)
    for size in [4, 8, 16, 32, 64]:
        heat = pose.heat(positions, size)
        assert heat.shape == (1, 2, size, size)
        for p in range(2):
            row, col = divmod(int(heat[0, p].argmax()), size)
            # the pixel whose centre is nearest the position (ties: either neighbour)
            for got, want in ((col, positions[0, p, 0]), (row, positions[0, p, 1])):
                assert abs((got + 0.5) / size - float(want)) <= 0.5 / size + 1e-6, (size, p, got, want)
    torch.testing.assert_close(pose.heat(positions, 64), pose.heat(positions * torch.tensor([1, 1, 0.0]), 64))


def test_pose_map_moves_the_decoder_output_where_the_arm_goes():
    """With pose maps, a commanded move changes the prediction most where the command takes
    the arm (dead reckoned): the maps are wired to the decoder's output at the right place."""
    torch.manual_seed(0)
    model = SVG(tiny(**CDNA, condition="causal", action_lag=0, pose_map=True)).eval()
    with torch.no_grad():  # make the maps matter: a strong output shift of the generated-image mask
        model.pose.out.weight.zero_()
        model.pose.out.weight[3 + model.transform.n_kernels + BACKGROUNDS.index("generated"), 1] = 20.0
    frames, conds = batch()
    conds[:, :, 4:] = torch.tensor([0.5, 0.5, 0.0])
    conds[:, :, :4] = 0.0
    moved = conds.clone()
    moved[:, 2, :2] = torch.tensor([0.25, 0.0])  # frame 2: the arm commanded to x = 0.75, y = 0.5
    noise = torch.randn(2, 5, 4)
    out = lambda c: rollout(model, frames, c, 2, use_posterior=False, noise=noise).pred[:, 1]  # noqa: E731
    diff = (out(moved) - out(conds)).abs().sum((0, 1))  # (64, 64)
    near = diff[28:36, 44:52].mean()  # around pixel (48, 32)
    far = diff[:, :16].mean()
    assert near > 10 * far and near > 1e-2


def test_pose_map_config_is_checked():
    with pytest.raises(ConfigError, match="model.pose_map .* model.cond_dim must be 7"):
        tiny(pose_map=True, cond_dim=4)


def test_pose_map_positions_are_the_causal_condition_s():
    """The positions drawn for step t are those of frames t-1 and t as the causal condition
    holds them: recorded while observed, dead reckoned after; nothing of a frame not yet observed."""
    model = SVG(tiny(**CDNA, condition="causal", action_lag=0, pose_map=True))
    _, conds = batch(B=1, T=5)
    _, _, pose = model.embed_conditions(conds, 2)
    assert pose.shape == (1, 4, 2, 3)
    p, a = conds[0, :, 4:], conds[0, :, :3]
    for t in range(1, 5):
        o = min(t - 1, 1)
        reckon = lambda f: p[f] if f <= o else p[o] + a[o + 1 : f + 1].sum(0)  # noqa: E731
        torch.testing.assert_close(pose[0, t - 1], torch.stack([reckon(t - 1), reckon(t)]))


def test_pose_map_shifts_are_the_1x1_convolutions_of_the_heat_maps():
    """The fused matrix product gives what the stored 1x1 convolutions compute, values and gradients."""
    torch.manual_seed(0)
    pose = SVG(tiny(**CDNA, pose_map=True)).pose
    positions = torch.rand(3, 2, 3)
    stages, out = pose(positions)
    convs = list(pose.stages) + [pose.out]
    sizes = pose.stage_sizes + [64]
    for conv, size, got in zip(convs, sizes, stages + [out]):
        torch.testing.assert_close(got, conv(pose.heat(positions, size)))
    stages[-1].sum().backward()
    w = pose.stages[-1].weight
    grad, w.grad = w.grad.clone(), None
    pose.stages[-1](pose.heat(positions, sizes[-2])).sum().backward()
    torch.testing.assert_close(grad, w.grad)


def progress_model_and_poses(bias: float | None, steps_observed=2):
    """A model with ``arm_progress`` whose head gives every step the factor 2 * sigmoid(bias), the
    positions its decoder got in a free run from the prior, the conditions (the arm at (0.5, 0.5,
    0.02) in the observed frames, then commanded 0.05 right and 0.01 down per step) and the
    rollout's predicted arm. ``bias=None``: the head as initialised."""
    torch.manual_seed(0)
    model = SVG(tiny(**CDNA, condition="causal", action_lag=0, pose_map=True, arm_shift=True,
                     arm_progress=True)).eval()
    if bias is not None:
        with torch.no_grad():
            model.progress.weight.zero_()
            model.progress.bias.fill_(bias)
    frames, conds = batch()
    conds = conds.clone()
    conds[..., :3] = torch.tensor([0.05, 0.01, 0.0])
    conds[..., ACTION_DIM:] = torch.tensor([0.5, 0.5, 0.02])
    seen = []
    decode = model.decode

    def spy(g, skips, z, step_cond, context=None, pose=None):
        seen.append(pose)
        return decode(g, skips, z, step_cond, context, pose)

    model.decode = spy
    with torch.no_grad():
        out = rollout(model, frames, conds, steps_observed, use_posterior=False)
    return model, torch.cat(seen, 1), conds, out.arm


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.0, 1.5])
def test_arm_progress_scales_each_commanded_move_from_the_last_observed_position(factor):
    """Steps 0 and 1 (frames 0 and 1 observed) start from the recorded position; later steps from
    where the previous one left the arm: with factor f the arm of frame t (t >= 2) is the position
    of frame 1 plus f times the moves commanded since (f = 0: it stalls there; 1: dead reckoning)."""
    bias = -40.0 if factor == 0 else math.log(factor / (2 - factor))  # 2 * sigmoid(bias) = factor
    _, pose, _, arm = progress_model_and_poses(bias)
    assert pose.shape == (2, 5, 2, 3) and pose.dtype == torch.float32
    p, move = torch.tensor([0.5, 0.5, 0.02]), torch.tensor([0.05, 0.01, 0.0])
    want = torch.stack([
        torch.stack([p, p + factor * move]),  # frame 0 -> 1: from the recorded frame 0
        torch.stack([p, p + factor * move]),  # frame 1 -> 2: from the recorded frame 1
        *[torch.stack([p + k * factor * move, p + (k + 1) * factor * move]) for k in (1, 2, 3)],
    ])
    torch.testing.assert_close(pose, want.expand(2, 5, 2, 3), rtol=0, atol=1e-6)
    torch.testing.assert_close(arm, pose[:, :, 1])  # the rollout's predicted arm of frames 1..5


def test_arm_progress_starts_near_dead_reckoning_and_learns_from_the_pixels():
    """At initialisation only z_t moves the factor, by about 1%: the arm goes where the commands say
    (within 0.2 px here), and the posterior's z_t already gets a gradient through the head."""
    model, pose, conds, _ = progress_model_and_poses(None)
    reckoned = model.embed_conditions(conds, 2)[2]
    G = model.cfg.g_dim
    assert model.progress.weight[:, :G].abs().sum() == 0 and model.progress.weight[:, G:].abs().sum() > 0
    assert 0 < (pose - reckoned).abs().max() < 0.2 / 64
    model.decode = SVG.decode.__get__(model)  # the spy off
    frames, conds = batch()
    out = rollout(model.train(), frames, conds, 2, teacher_forcing=False)
    ((out.pred - frames[:, 1:]) ** 2).mean().backward()
    assert model.progress.weight.grad.abs().sum() > 0 and model.progress.bias.grad.abs() > 0
    model.zero_grad()
    rollout(model, frames, conds, 2, teacher_forcing=False).arm.sum().backward()  # through the head alone
    assert model.posterior[0].parameters().__next__().grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="arm_progress.*pose_map=true"):
        tiny(**CDNA, arm_progress=True)
    with pytest.raises(ConfigError, match="arm_progress.*model.condition=causal"):
        tiny(**CDNA, pose_map=True, arm_progress=True)  # lab: the pose maps read recorded positions
