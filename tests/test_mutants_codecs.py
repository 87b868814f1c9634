"""Unit tests of ``models/codecs.py`` written against `make mutation` (docs/testing.md).

Every expected value is computed independently of the module: each encoder and decoder
is run again layer by layer with ``torch.nn.functional`` and the architecture written
out here from the module docstring (kernel, stride, padding, pooling, upsampling, the
order of the skips), normalisation and the conditional scale/shift by their formulas,
batch norm per time step against one plain batch norm per step. Only the weights are
taken from the modules (made random, so that a block that starts as the identity
shows). Channel and batch axes all have different sizes. All run in milliseconds.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidpred.errors import ConfigError
from vidpred.models import codecs
from vidpred.models.codecs import (
    CondScaleShift, ConvBlock, DCGANDecoder, DCGANEncoder, Stage, StepBatchNorm2d, VGGDecoder, VGGEncoder,
    build_codec, make_norm, per_step_statistics,
)

EPS = 1e-5  # BatchNorm's and GroupNorm's default


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, including norms and conditional layers (which start as
    the identity), and random running statistics with positive variances."""
    g = gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module


# -- normalisation by hand ----------------------------------------------------------------


def batch_norm_eval(bn, y):
    rm, rv = bn.running_mean[None, :, None, None], bn.running_var[None, :, None, None]
    return (y - rm) / torch.sqrt(rv + EPS) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


def batch_norm_train(y, weight, bias):
    mean = y.mean(dim=(0, 2, 3), keepdim=True)
    var = y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (y - mean) / torch.sqrt(var + EPS) * weight[None, :, None, None] + bias[None, :, None, None]


def group_norm(gn, y, groups):
    N, C, H, W = y.shape
    z = y.reshape(N, groups, -1)
    z = (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + EPS)
    return z.reshape(N, C, H, W) * gn.weight[None, :, None, None] + gn.bias[None, :, None, None]


def test_step_batch_norm_by_hand_per_step_and_running_averages():
    """(B*S, C, H, W), rows sample-major: step s of sample b is row b*S + s. Each step is
    normalised over its own B frames; the running averages move by momentum toward each
    step's statistics (unbiased variance) and keep the mean over the steps."""
    B, S, C, H, W = 3, 4, 5, 2, 3
    bn = randomise(StepBatchNorm2d(C, momentum=0.3), seed=1).train()
    rm0, rv0 = bn.running_mean.clone(), bn.running_var.clone()
    x = torch.randn(B, S, C, H, W, generator=gen(2)) * torch.arange(1, S + 1).view(1, S, 1, 1, 1) + 0.5
    with per_step_statistics(bn, S):
        assert bn.steps == S
        y = bn(x.flatten(0, 1))
    assert bn.steps == 1
    assert y.shape == (B * S, C, H, W)
    y = y.view(B, S, C, H, W)
    for s in range(S):
        torch.testing.assert_close(y[:, s], batch_norm_train(x[:, s], bn.weight, bn.bias), rtol=1e-4, atol=1e-5)
    n = B * H * W
    means = torch.stack([x[:, s].mean(dim=(0, 2, 3)) for s in range(S)])  # (S, C)
    vars_ = torch.stack([x[:, s].var(dim=(0, 2, 3), unbiased=False) * n / (n - 1) for s in range(S)])
    with torch.no_grad():
        torch.testing.assert_close(bn.running_mean, (0.7 * rm0 + 0.3 * means).mean(0))
        torch.testing.assert_close(bn.running_var, (0.7 * rv0 + 0.3 * vars_).mean(0))
    assert bn.num_batches_tracked.item() == 1
    assert bn.steps == 1


def test_step_batch_norm_with_one_step_or_in_eval_is_plain_batch_norm():
    B, C = 6, 3
    x = torch.randn(B, C, 4, 4, generator=gen(3)) * 2 + 1
    bn = randomise(StepBatchNorm2d(C), seed=4).train()
    rm0 = bn.running_mean.clone()
    y = bn(x)  # steps = 1: the whole batch's statistics
    torch.testing.assert_close(y, batch_norm_train(x, bn.weight, bn.bias), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_mean, 0.9 * rm0 + 0.1 * x.mean(dim=(0, 2, 3)))
    bn.eval()
    with per_step_statistics(bn, 3):  # running averages: the steps change nothing
        torch.testing.assert_close(bn(x), batch_norm_eval(bn, x))
    with torch.no_grad():
        torch.testing.assert_close(bn.running_mean, 0.9 * rm0 + 0.1 * x.mean(dim=(0, 2, 3)))


def test_step_batch_norm_without_running_statistics():
    B, S, C = 2, 3, 4
    bn = randomise(StepBatchNorm2d(C, track_running_stats=False), seed=5).train()
    assert bn.running_mean is None
    x = torch.randn(B, S, C, 3, 3, generator=gen(6))
    with per_step_statistics(bn, S):
        y = bn(x.flatten(0, 1)).view(B, S, C, 3, 3)
    for s in range(S):
        torch.testing.assert_close(y[:, s], batch_norm_train(x[:, s], bn.weight, bn.bias), rtol=1e-4, atol=1e-5)


def test_per_step_statistics_sets_every_step_norm_and_restores_after_an_error():
    net = nn.Sequential(StepBatchNorm2d(2), nn.Sequential(StepBatchNorm2d(3), nn.GroupNorm(1, 3)))
    norms = [m for m in net.modules() if isinstance(m, StepBatchNorm2d)]
    with pytest.raises(RuntimeError, match="inside"):
        with per_step_statistics(net, 5):
            assert [m.steps for m in norms] == [5, 5]
            raise RuntimeError("inside")
    assert [m.steps for m in norms] == [1, 1]


@pytest.mark.parametrize("channels,groups", [(3, 3), (8, 8), (16, 8)])
def test_make_norm_group_norm_has_at_most_eight_groups(channels, groups):
    gn = make_norm("group", channels)
    assert type(gn) is nn.GroupNorm and gn.num_groups == groups and gn.num_channels == channels
    randomise(gn, seed=channels)
    y = torch.randn(2, channels, 3, 5, generator=gen(7))
    torch.testing.assert_close(gn(y), group_norm(gn, y, groups), rtol=1e-4, atol=1e-5)


def test_make_norm_batch_and_unknown():
    bn = make_norm("batch", 6)
    assert type(bn) is StepBatchNorm2d and bn.num_features == 6 and bn.steps == 1
    with pytest.raises(ConfigError) as err:
        make_norm("layer", 4)
    assert str(err.value) == "model.norm must be one of ('batch', 'group'), got 'layer'"


# -- conditional scale / shift, conv blocks -----------------------------------------------


def test_cond_scale_shift_starts_as_the_identity_and_computes_its_formula():
    E, C = 3, 5
    m = CondScaleShift(E, C)
    y = torch.randn(4, C, 2, 3, generator=gen(8))
    c = torch.randn(4, E, generator=gen(9))
    torch.testing.assert_close(m(y, c), y)  # softplus(0.5413...) = 1, shift 0
    assert math.log1p(math.exp(0.5413248546129181)) == pytest.approx(1.0, abs=1e-12)
    randomise(m, seed=10)
    scale = torch.log1p(torch.exp(c @ m.scale.weight.T + m.scale.bias))  # softplus by its definition
    shift = c @ m.shift.weight.T + m.shift.bias
    torch.testing.assert_close(m(y, c), y * scale[:, :, None, None] + shift[:, :, None, None])


def activation(name, y):
    return {"lrelu": torch.where(y >= 0, y, 0.2 * y), "tanh": torch.tanh(y), "sigmoid": 1 / (1 + torch.exp(-y)),
            "none": y}[name]


@pytest.mark.parametrize("act", ["lrelu", "tanh", "sigmoid", "none"])
def test_conv_block_without_norm_has_a_bias_and_applies_its_activation(act):
    block = randomise(ConvBlock(3, 4, 3, 2, 1, norm=None, act=act), seed=11)
    assert block.conv.bias is not None and type(block.norm) is nn.Identity and block.cond is None
    x = torch.randn(2, 3, 7, 6, generator=gen(12))
    y = F.conv2d(x, block.conv.weight, block.conv.bias, stride=2, padding=1)
    torch.testing.assert_close(block(x), activation(act, y))
    torch.testing.assert_close(block(x, torch.ones(2, 9)), activation(act, y))  # c is ignored


def test_conv_block_defaults_batch_norm_lrelu_and_no_bias():
    block = ConvBlock(3, 4, 3, 1, 1)
    assert type(block.conv) is codecs.Conv2d and block.conv.bias is None
    assert type(block.norm) is StepBatchNorm2d and block.norm.num_features == 4 and block.cond is None
    assert type(block.act) is nn.LeakyReLU and block.act.negative_slope == 0.2
    randomise(block, seed=13).eval()
    x = torch.randn(2, 3, 5, 4, generator=gen(14))
    y = batch_norm_eval(block.norm, F.conv2d(x, block.conv.weight, None, stride=1, padding=1))
    torch.testing.assert_close(block(x), activation("lrelu", y))


def test_transposed_conditional_block_by_hand_and_needs_its_condition():
    E = 3
    block = randomise(ConvBlock(4, 2, 4, 2, 1, transpose=True, norm="group", act="tanh", cond_dim=E), seed=15)
    assert type(block.conv) is codecs.ConvTranspose2d and block.conv.bias is None
    assert block.cond.scale.in_features == E and block.cond.scale.out_features == 2
    x = torch.randn(3, 4, 3, 5, generator=gen(16))
    c = torch.randn(3, E, generator=gen(17))
    y = group_norm(block.norm, F.conv_transpose2d(x, block.conv.weight, None, stride=2, padding=1), 2)
    y = y * F.softplus(c @ block.cond.scale.weight.T + block.cond.scale.bias)[:, :, None, None] \
        + (c @ block.cond.shift.weight.T + block.cond.shift.bias)[:, :, None, None]
    out = block(x, c)
    assert out.shape == (3, 2, 6, 10)
    torch.testing.assert_close(out, torch.tanh(y), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError) as err:
        block(x)
    assert str(err.value) == "a conditional convolution needs a condition embedding"


def test_a_one_number_condition_makes_a_conditional_block():
    block = randomise(ConvBlock(2, 3, 3, 1, 1, norm=None, act="none", cond_dim=1), seed=28)
    assert isinstance(block.cond, CondScaleShift) and block.cond.scale.in_features == 1
    x, c = torch.randn(2, 2, 4, 4, generator=gen(29)), torch.tensor([[0.5], [-2.0]])
    y = F.conv2d(x, block.conv.weight, block.conv.bias, padding=1)
    want = y * F.softplus(c @ block.cond.scale.weight.T + block.cond.scale.bias)[:, :, None, None] \
        + (c @ block.cond.shift.weight.T + block.cond.shift.bias)[:, :, None, None]
    torch.testing.assert_close(block(x, c), want)
    assert ConvBlock(2, 3, 3, 1, 1, cond_dim=0).cond is None


def test_stage_threads_the_condition_through_every_block():
    E = 2
    stage = randomise(Stage(ConvBlock(2, 3, 3, 1, 1, norm=None, cond_dim=E),
                            ConvBlock(3, 4, 3, 1, 1, norm=None, cond_dim=E)), seed=18)
    x, c = torch.randn(2, 2, 4, 4, generator=gen(19)), torch.randn(2, E, generator=gen(20))
    torch.testing.assert_close(stage(x, c), stage[1](stage[0](x, c), c))
    with pytest.raises(ValueError):
        stage(x)


def test_widths():
    assert codecs._widths(1) == [1, 2, 4, 8]
    assert codecs._widths(3) == [3, 6, 12, 24]
    with pytest.raises(ConfigError) as err:
        codecs._widths(0)
    assert str(err.value) == "model.width must be >= 1, got 0"


# -- the codecs layer by layer ------------------------------------------------------------


def block_by_hand(block, x, c, *, transpose, stride, padding, norm, act, groups=None):
    """One block from its weights; the rest (conv kind, stride, padding, norm, activation) as documented."""
    conv = F.conv_transpose2d if transpose else F.conv2d
    if norm is None:
        assert block.conv.bias is not None
        y = conv(x, block.conv.weight, block.conv.bias, stride=stride, padding=padding)
    else:
        assert block.conv.bias is None
        y = conv(x, block.conv.weight, None, stride=stride, padding=padding)
        y = batch_norm_eval(block.norm, y) if norm == "batch" else group_norm(block.norm, y, groups)
    if c is not None:
        y = y * F.softplus(c @ block.cond.scale.weight.T + block.cond.scale.bias)[:, :, None, None] \
            + (c @ block.cond.shift.weight.T + block.cond.shift.bias)[:, :, None, None]
    else:
        assert block.cond is None
    return activation(act, y)


def dcgan_encoder_by_hand(enc, x, c, norm, width):
    """4x4 stride-2 convolutions 64 -> 32 -> 16 -> 8 -> 4 (the first without a norm), then a
    4x4 valid convolution to g_dim with tanh. Skips: the output of each stride-2 stage."""
    skips = []
    for i, stage in enumerate(enc.stages):
        assert len(stage) == 1
        x = block_by_hand(stage[0], x, c, transpose=False, stride=2, padding=1, norm=None if i == 0 else norm,
                          act="lrelu", groups=min(8, width * 2 ** i))
        skips.append(x)
    h = block_by_hand(enc.out, x, c, transpose=False, stride=1, padding=0, norm=norm, act="tanh",
                      groups=min(8, enc.out.conv.out_channels))
    return h.flatten(1), skips


def dcgan_decoder_by_hand(dec, h, skips, c, norm, width, inject, out_act):
    """4x4 transposed conv 1 -> 4, then per stage: + inject, concat the skip of that size,
    4x4 stride-2 transposed conv; the last (to 64 px) without a norm and with out_act."""
    x = block_by_hand(dec.inp, h[:, :, None, None], c, transpose=True, stride=1, padding=0, norm=norm,
                      act="lrelu", groups=min(8, width * 8))
    for i, skip in enumerate([skips[3], skips[2], skips[1], skips[0]]):
        if i < len(inject):
            x = x + inject[i]
        last = i == 3
        x = block_by_hand(dec.stages[i][0], torch.cat([x, skip], 1), None if last else c, transpose=True,
                          stride=2, padding=1, norm=None if last else norm, act=out_act if last else "lrelu",
                          groups=min(8, width * 2 ** (2 - i)))
    return x


def vgg_encoder_by_hand(enc, x, c, norm, width):
    """Blocks of 3x3 conv (padding 1) + norm + LeakyReLU: 2, 2, 3, 3 at 64, 32, 16, 8 px with a
    2x2 max-pool before each stage but the first; max-pool to 4 px and a 4x4 valid conv + tanh."""
    counts = [2, 2, 3, 3]
    skips = []
    for i, stage in enumerate(enc.stages):
        assert len(stage) == counts[i]
        if i > 0:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        for block in stage:
            x = block_by_hand(block, x, c, transpose=False, stride=1, padding=1, norm=norm, act="lrelu",
                              groups=min(8, block.conv.out_channels))
        skips.append(x)
    x = F.max_pool2d(x, kernel_size=2, stride=2)
    h = block_by_hand(enc.out, x, c, transpose=False, stride=1, padding=0, norm=norm, act="tanh",
                      groups=min(8, enc.out.conv.out_channels))
    return h.flatten(1), skips


def vgg_decoder_by_hand(dec, h, skips, c, norm, width, inject, out_act):
    """4x4 transposed conv 1 -> 4, then per stage: nearest upsampling x2 (pixel repeated 2x2),
    + inject, concat the skip, 3, 3, 2, 2 blocks of 3x3 conv; the very last block without a norm."""
    counts = [3, 3, 2, 2]
    x = block_by_hand(dec.inp, h[:, :, None, None], c, transpose=True, stride=1, padding=0, norm=norm,
                      act="lrelu", groups=min(8, width * 8))
    for i, skip in enumerate([skips[3], skips[2], skips[1], skips[0]]):
        x = x.repeat_interleave(2, -1).repeat_interleave(2, -2)
        if i < len(inject):
            x = x + inject[i]
        x = torch.cat([x, skip], 1)
        stage = dec.stages[i]
        assert len(stage) == counts[i]
        for j, block in enumerate(stage):
            last = i == 3 and j == len(stage) - 1
            x = block_by_hand(block, x, None if last else c, transpose=False, stride=1, padding=1,
                              norm=None if last else norm, act=out_act if last else "lrelu",
                              groups=min(8, block.conv.out_channels))
    return x


ENCODERS = {"dcgan64": (DCGANEncoder, dcgan_encoder_by_hand), "vgg64": (VGGEncoder, vgg_encoder_by_hand)}
DECODERS = {"dcgan64": (DCGANDecoder, dcgan_decoder_by_hand), "vgg64": (VGGDecoder, vgg_decoder_by_hand)}
SKIP_SIZES = {"dcgan64": [32, 16, 8, 4], "vgg64": [64, 32, 16, 8]}
CASES = [  # (codec, norm, cond_dim)
    ("dcgan64", "batch", 0), ("dcgan64", "group", 3), ("vgg64", "batch", 3), ("vgg64", "group", 0),
]


@pytest.mark.parametrize("name,norm,E", CASES)
def test_encoder_by_hand(name, norm, E):
    N, G, width = 2, 5, 2
    cls, by_hand = ENCODERS[name]
    enc = randomise(cls(G, width, norm, E), seed=21).eval()
    x = torch.rand(N, 3, 64, 64, generator=gen(22))
    c = torch.randn(N, E, generator=gen(23)) if E else None
    with torch.no_grad():
        h, skips = enc(x, c)
        h_ref, skips_ref = by_hand(enc, x, c, norm, width)
    assert h.shape == (N, G)
    assert [tuple(s.shape) for s in skips] == [(N, width * 2 ** i, px, px) for i, px in enumerate(SKIP_SIZES[name])]
    torch.testing.assert_close(h, h_ref, rtol=1e-4, atol=1e-5)
    for s, ref in zip(skips, skips_ref):
        torch.testing.assert_close(s, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,norm,E", CASES)
@pytest.mark.parametrize("n_inject", [0, 2, 4])
def test_decoder_by_hand_with_skips_and_injected_shifts(name, norm, E, n_inject):
    N, G, width = 2, 5, 2
    out_channels, out_act = (3, "sigmoid") if n_inject != 2 else (4, "none")
    cls, by_hand = DECODERS[name]
    dec = randomise(cls(G, width, norm, E, out_channels, out_act), seed=24).eval()
    in_ch = [width * 8, width * 4, width * 2, width]
    assert dec.stage_in_channels == in_ch
    assert dec.stage_in_sizes == ([4, 8, 16, 32] if name == "dcgan64" else [8, 16, 32, 64])
    g = gen(25)
    h = torch.randn(N, G, generator=g)
    skips = [torch.randn(N, width * 2 ** i, px, px, generator=g) for i, px in enumerate(SKIP_SIZES[name])]
    c = torch.randn(N, E, generator=g) if E else None
    inject = [torch.randn(N, in_ch[i], *((1, 1) if i % 2 else (dec.stage_in_sizes[i],) * 2), generator=g)
              for i in range(n_inject)]
    with torch.no_grad():
        x = dec(h, skips, c, inject)
        ref = by_hand(dec, h, skips, c, norm, width, inject, out_act)
    assert x.shape == (N, out_channels, 64, 64)
    torch.testing.assert_close(x, ref, rtol=1e-4, atol=1e-5)
    if out_act == "sigmoid":
        assert 0 <= x.min() and x.max() <= 1


@pytest.mark.parametrize("name", ["dcgan64", "vgg64"])
def test_decoder_defaults_and_default_arguments(name):
    """Without cond/inject: plain decoding; the defaults are width 64, batch norm, no
    condition, 3 sigmoid channels."""
    cls, by_hand = DECODERS[name]
    dec = randomise(cls(4, 1, "batch", 0), seed=26).eval()
    g = gen(27)
    h = torch.randn(2, 4, generator=g)
    skips = [torch.randn(2, 2 ** i, px, px, generator=g) for i, px in enumerate(SKIP_SIZES[name])]
    with torch.no_grad():
        torch.testing.assert_close(dec(h, skips), by_hand(dec, h, skips, None, "batch", 1, (), "sigmoid"),
                                   rtol=1e-4, atol=1e-5)
    enc_cls = ENCODERS[name][0]
    for part, plain in ((cls(4), 1), (enc_cls(4), 1 if name == "dcgan64" else 0)):
        blocks = [m for m in part.modules() if isinstance(m, ConvBlock)]
        assert max(b.conv.out_channels for b in blocks) == 512  # width 64: 64 * 8
        assert all(b.cond is None for b in blocks)
        assert sum(isinstance(b.norm, StepBatchNorm2d) for b in blocks) == len(blocks) - plain
    last = cls(4).stages[-1][-1]
    assert last.conv.out_channels == 3 and type(last.act) is nn.Sigmoid


@pytest.mark.parametrize("name,enc_cls,dec_cls", [("dcgan64", DCGANEncoder, DCGANDecoder),
                                                  ("vgg64", VGGEncoder, VGGDecoder)])
def test_build_codec_passes_every_argument(name, enc_cls, dec_cls):
    enc, dec = build_codec(name, 7, 2, "group", enc_cond_dim=3, dec_cond_dim=4, dec_out_channels=5,
                           dec_out_act="tanh")
    assert type(enc) is enc_cls and type(dec) is dec_cls
    assert enc.out.conv.out_channels == 7 and enc.out.cond.scale.in_features == 3
    assert dec.inp.conv.in_channels == 7 and dec.inp.cond.scale.in_features == 4
    assert enc.stages[0][0].conv.out_channels == 2 and dec.stages[-1][0].conv.in_channels == 4
    assert isinstance(enc.out.norm, nn.GroupNorm) and isinstance(dec.inp.norm, nn.GroupNorm)
    last = dec.stages[-1][-1]
    assert last.conv.out_channels == 5 and type(last.act) is nn.Tanh
    enc, dec = build_codec(name, 7, 2, "batch")  # defaults: no condition, 3 sigmoid channels
    assert all(m.cond is None for m in list(enc.modules()) + list(dec.modules()) if isinstance(m, ConvBlock))
    last = dec.stages[-1][-1]
    assert last.conv.out_channels == 3 and type(last.act) is nn.Sigmoid
    assert isinstance(enc.out.norm, StepBatchNorm2d)


def test_build_codec_unknown_name():
    with pytest.raises(ConfigError) as err:
        build_codec("resnet", 4, 1, "batch")
    assert str(err.value) == "model.codec must be one of ('dcgan64', 'vgg64'), got 'resnet'"
