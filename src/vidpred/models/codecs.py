"""Frame codecs: 64x64 encoders returning ``(h, skips)`` and decoders mirroring them.

Two architectures after SVG (Denton & Fergus 2018):

* ``dcgan64``: 4x4 stride-2 convolutions, 64 -> 32 -> 16 -> 8 -> 4 -> 1.
* ``vgg64``: blocks of 3x3 conv + norm + LeakyReLU(0.2) at 64/32/16/8 px with
  max-pooling between them, a 4x4 conv to ``g_dim`` at the end.

``width`` scales every channel count (64 is the paper's setting) so that CPU runs
can be small. The decoder concatenates the encoder's skip features at each scale
and ends with a sigmoid, so predictions are in [0, 1].

Every conv block can be a *conditional convolution* (Choi, El-Khamy & Lee 2019):
its output channels are scaled by ``softplus(W_s c)`` and shifted by ``W_b c``
where ``c`` is the step's condition embedding. Blocks take ``(x, c)``; ``c`` is
ignored by plain blocks.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from vidpred.errors import ConfigError

CODECS = ("dcgan64", "vgg64")
NORMS = ("batch", "group")


class StepBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are taken per time step.

    A rollout feeds the codec frames of shape ``(B * S, C, H, W)`` (``S`` steps
    of each sequence, sample-major). The step-by-step rollout calls the codec
    once per step, so plain BatchNorm normalises over the B frames of one step,
    while the teacher-forced fast path encodes and decodes all steps at once and
    would normalise over B * S frames: the two paths would be different models.
    With ``steps = S`` set (see :func:`per_step_statistics`), each step is
    normalised with the statistics of its own B frames, as in the step loop,
    and the running averages move by the mean of the S steps' statistics.
    In evaluation mode (running averages) ``steps`` changes nothing. (The running
    averages are the one thing the paths do not share: the step loop moves them
    once per step, the fast path once per window. Under multi-GPU training,
    SyncBatchNorm replaces these layers and pools the fast path's steps.) With
    channels_last input the reshape copies, and the output is copied back to
    channels_last: left NCHW, every later layer of the channels_last model would
    convert it again (a vgg64 bf16 training step: 4.5 s instead of 3.6 s).
    """

    steps: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        S = self.steps
        if S == 1 or not self.training:
            return super().forward(x)
        N, C, H, W = x.shape
        # (B*S, C, H, W) -> (B, S*C, H, W): one fused batch norm, a "channel" per (step, channel)
        y = x.reshape(N // S, S * C, H, W)
        mean = self.running_mean.repeat(S) if self.running_mean is not None else None
        var = self.running_var.repeat(S) if self.running_var is not None else None
        y = F.batch_norm(y, mean, var, self.weight.repeat(S), self.bias.repeat(S), True, self.momentum, self.eps)
        if mean is not None:
            with torch.no_grad():  # each step moved its copy by momentum: keep their average
                self.running_mean.copy_(mean.view(S, C).mean(0))
                self.running_var.copy_(var.view(S, C).mean(0))
                self.num_batches_tracked.add_(1)
        y = y.reshape(N, C, H, W)
        if _channels_last(x):
            y = y.contiguous(memory_format=torch.channels_last)
        return y


@contextmanager
def per_step_statistics(module: nn.Module, steps: int):
    """Within the block, the :class:`StepBatchNorm2d` layers of ``module`` treat their
    input as ``steps`` frames per sequence (see there)."""
    norms = [m for m in module.modules() if isinstance(m, StepBatchNorm2d)]
    for m in norms:
        m.steps = steps
    try:
        yield
    finally:
        for m in norms:
            m.steps = 1


def norm_groups(channels: int, most: int = 8) -> int:
    """GroupNorm's group count: the largest divisor of ``channels`` up to ``most`` (8 for any
    multiple of 8, all channels below 8; 6 for 12 channels, which ``min(8, channels)`` would
    not divide)."""
    return max(g for g in range(1, most + 1) if channels % g == 0)


def make_norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm as in SVG (statistics per time step); GroupNorm is per-sample (batch-size independent)."""
    if kind == "batch":
        return StepBatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(norm_groups(channels), channels)
    raise ConfigError(f"model.norm must be one of {NORMS}, got {kind!r}")


class CondScaleShift(nn.Module):
    """Channel-wise modulation of Choi et al. (2019): ``y * softplus(W_s c) + W_b c``.

    Initialised so that the block starts as the identity (scale 1, shift 0).
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.scale = nn.Linear(cond_dim, channels)
        self.shift = nn.Linear(cond_dim, channels)
        nn.init.zeros_(self.scale.weight)
        nn.init.constant_(self.scale.bias, 0.5413248546129181)  # softplus^-1(1)
        nn.init.zeros_(self.shift.weight)
        nn.init.zeros_(self.shift.bias)

    def forward(self, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale = F.softplus(self.scale(c))[:, :, None, None]  # (N, C, 1, 1)
        shift = self.shift(c)[:, :, None, None]
        return y * scale + shift


class Conv2d(nn.Conv2d):
    """``nn.Conv2d``; on CPU a kernel that covers its whole input without padding (the
    encoders' last layer, 4x4 -> 1x1) runs as the matrix product it is, which oneDNN's
    convolution does 4-9x slower at these shapes (``benchmarks/RESULTS.md``).
    ``matmul = False`` keeps PyTorch's convolution (the benchmark's reference schedule)."""

    matmul = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.matmul and x.device.type == "cpu" and x.dim() == 4 and tuple(x.shape[-2:]) == self.kernel_size
                and self.padding == (0, 0) and self.dilation == (1, 1) and self.groups == 1):
            y = F.linear(x.flatten(1), self.weight.flatten(1), self.bias)
            return y[:, :, None, None]
        return super().forward(x)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d``; on CPU two shapes run as matrix products, where oneDNN's
    transposed convolution is slow (``benchmarks/RESULTS.md``, forward and backward):

    * a 1x1 input without padding (the decoders' first layer, 1 -> 4): one product (8x
      faster in bf16, 4x in fp32);
    * an input of at most 4x4 with at least 512 channels (DCGAN's 4 -> 8 layer at width
      32 or more): the product with every kernel position, summed into place by ``F.fold``
      (col2im, what a transposed convolution is; 3.2x faster in bf16, 1.25x in fp32). At
      width 16 the convolution is as fast.

    A channels_last input or model gets channels_last back, as from PyTorch's kernel.
    ``matmul = False`` keeps PyTorch's transposed convolution (the benchmark's reference).
    """

    matmul = True

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        plain = (not self.matmul or x.device.type != "cpu" or x.dim() != 4 or output_size is not None
                 or self.groups != 1 or self.dilation != (1, 1) or self.output_padding != (0, 0))
        if plain:
            return super().forward(x, output_size)
        N, C, H, W = x.shape
        kh, kw = self.kernel_size
        w = self.weight.flatten(1)  # (C_in, C_out * kh * kw)
        if H == W == 1 and self.padding == (0, 0):
            y = (x.flatten(1) @ w).view(N, self.out_channels, kh, kw)
        elif H <= 4 and W <= 4 and C >= 512:
            cols = torch.matmul(w.t(), x.flatten(2))  # (N, C_out * kh * kw, H * W)
            out = [(n - 1) * s - 2 * p + k for n, s, p, k in zip((H, W), self.stride, self.padding, (kh, kw))]
            y = F.fold(cols, out, (kh, kw), stride=self.stride, padding=self.padding)
        else:
            return super().forward(x, output_size)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)[:, None, None]
        if _channels_last(x) or _channels_last(self.weight):
            y = y.contiguous(memory_format=torch.channels_last)
        return y


def _channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is laid out channels_last (and not also plain contiguous, as a 1x1 map is)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


class ConvBlock(nn.Module):
    """conv (or transposed conv) -> norm -> optional conditional scale/shift -> activation."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        padding: int,
        *,
        transpose: bool = False,
        norm: str | None = "batch",
        act: str = "lrelu",
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        conv_cls = ConvTranspose2d if transpose else Conv2d
        # A bias before a normalisation is cancelled by it (zero gradient): leave it out.
        self.conv = conv_cls(cin, cout, kernel, stride, padding, bias=not norm)
        self.norm = make_norm(norm, cout) if norm else nn.Identity()
        # Modulate after the normalisation, which would otherwise undo it (as in FiLM).
        self.cond = CondScaleShift(cond_dim, cout) if cond_dim > 0 else None
        self.act = {
            "lrelu": nn.LeakyReLU(0.2, inplace=True),
            "tanh": nn.Tanh(),
            "sigmoid": nn.Sigmoid(),
            "none": nn.Identity(),
        }[act]

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm(self.conv(x))
        if self.cond is not None:
            if c is None:
                raise ValueError("a conditional convolution needs a condition embedding")
            y = self.cond(y, c)
        return self.act(y)


class Stage(nn.Sequential):
    """A sequence of :class:`ConvBlock` that threads the condition through."""

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, c)
        return x


def _widths(width: int) -> list[int]:
    if width < 1:
        raise ConfigError(f"model.width must be >= 1, got {width}")
    return [width, width * 2, width * 4, width * 8]


class DCGANEncoder(nn.Module):
    """x (N,3,64,64) -> h (N,g_dim), skips at 32, 16, 8, 4 px."""

    def __init__(self, g_dim: int, width: int = 64, norm: str = "batch", cond_dim: int = 0) -> None:
        super().__init__()
        w = _widths(width)
        kw = dict(norm=norm, cond_dim=cond_dim)
        self.stages = nn.ModuleList(
            [
                Stage(ConvBlock(3, w[0], 4, 2, 1, norm=None, cond_dim=cond_dim)),  # 32
                Stage(ConvBlock(w[0], w[1], 4, 2, 1, **kw)),  # 16
                Stage(ConvBlock(w[1], w[2], 4, 2, 1, **kw)),  # 8
                Stage(ConvBlock(w[2], w[3], 4, 2, 1, **kw)),  # 4
            ]
        )
        self.out = ConvBlock(w[3], g_dim, 4, 1, 0, norm=norm, act="tanh", cond_dim=cond_dim)  # 1

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None):
        skips = []
        for stage in self.stages:
            x = stage(x, c)
            skips.append(x)
        h = self.out(x, c)
        return h.flatten(1), skips


class DCGANDecoder(nn.Module):
    """h (N,g_dim) + skips -> x (N,out_channels,64,64); with the default sigmoid, a frame in [0,1]."""

    def __init__(self, g_dim: int, width: int = 64, norm: str = "batch", cond_dim: int = 0,
                 out_channels: int = 3, out_act: str = "sigmoid") -> None:
        super().__init__()
        w = _widths(width)
        kw = dict(transpose=True, norm=norm, cond_dim=cond_dim)
        self.stage_in_channels = [w[3], w[2], w[1], w[0]]  # channels of x entering each stage
        self.stage_in_sizes = [4, 8, 16, 32]  # and its size (px)
        self.inp = ConvBlock(g_dim, w[3], 4, 1, 0, **kw)  # 1 -> 4
        self.stages = nn.ModuleList(
            [
                Stage(ConvBlock(w[3] * 2, w[2], 4, 2, 1, **kw)),  # 8
                Stage(ConvBlock(w[2] * 2, w[1], 4, 2, 1, **kw)),  # 16
                Stage(ConvBlock(w[1] * 2, w[0], 4, 2, 1, **kw)),  # 32
                Stage(ConvBlock(w[0] * 2, out_channels, 4, 2, 1, transpose=True, norm=None, act=out_act)),  # 64
            ]
        )

    def forward(self, h, skips, c=None, inject=()):
        """h (N,g_dim), skips finest first, c (N,E) or None, inject: per-stage shifts
        broadcastable to the stage's input (N, C, s, s): (N, C, 1, 1) or spatial maps."""
        x = self.inp(h[:, :, None, None], c)
        for i, (stage, skip) in enumerate(zip(self.stages, reversed(skips))):
            if i < len(inject):
                x = x + inject[i]
            x = stage(torch.cat([x, skip], 1), c)
        return x


class VGGEncoder(nn.Module):
    """x (N,3,64,64) -> h (N,g_dim), skips at 64, 32, 16, 8 px."""

    def __init__(self, g_dim: int, width: int = 64, norm: str = "batch", cond_dim: int = 0) -> None:
        super().__init__()
        w = _widths(width)

        def vgg(cin: int, cout: int) -> ConvBlock:
            return ConvBlock(cin, cout, 3, 1, 1, norm=norm, cond_dim=cond_dim)

        self.stages = nn.ModuleList(
            [
                Stage(vgg(3, w[0]), vgg(w[0], w[0])),  # 64
                Stage(vgg(w[0], w[1]), vgg(w[1], w[1])),  # 32
                Stage(vgg(w[1], w[2]), vgg(w[2], w[2]), vgg(w[2], w[2])),  # 16
                Stage(vgg(w[2], w[3]), vgg(w[3], w[3]), vgg(w[3], w[3])),  # 8
            ]
        )
        self.out = ConvBlock(w[3], g_dim, 4, 1, 0, norm=norm, act="tanh", cond_dim=cond_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None):
        skips = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = stage(x, c)
            skips.append(x)
        h = self.out(F.max_pool2d(x, 2), c)  # 4 -> 1
        return h.flatten(1), skips


class VGGDecoder(nn.Module):
    """h (N,g_dim) + skips -> x (N,out_channels,64,64); with the default sigmoid, a frame in [0,1]."""

    def __init__(self, g_dim: int, width: int = 64, norm: str = "batch", cond_dim: int = 0,
                 out_channels: int = 3, out_act: str = "sigmoid") -> None:
        super().__init__()
        w = _widths(width)

        def vgg(cin: int, cout: int) -> ConvBlock:
            return ConvBlock(cin, cout, 3, 1, 1, norm=norm, cond_dim=cond_dim)

        self.stage_in_channels = [w[3], w[2], w[1], w[0]]  # channels of x entering each stage
        self.stage_in_sizes = [8, 16, 32, 64]  # and its size (px, after the upsampling)
        self.inp = ConvBlock(g_dim, w[3], 4, 1, 0, transpose=True, norm=norm, cond_dim=cond_dim)  # 1 -> 4
        self.stages = nn.ModuleList(
            [
                Stage(vgg(w[3] * 2, w[3]), vgg(w[3], w[3]), vgg(w[3], w[2])),  # 8
                Stage(vgg(w[2] * 2, w[2]), vgg(w[2], w[2]), vgg(w[2], w[1])),  # 16
                Stage(vgg(w[1] * 2, w[1]), vgg(w[1], w[0])),  # 32
                Stage(vgg(w[0] * 2, w[0]), ConvBlock(w[0], out_channels, 3, 1, 1, norm=None, act=out_act)),  # 64
            ]
        )

    def forward(self, h, skips, c=None, inject=()):
        """h (N,g_dim), skips finest first, c (N,E) or None, inject: per-stage shifts
        broadcastable to the stage's input (N, C, s, s): (N, C, 1, 1) or spatial maps."""
        x = self.inp(h[:, :, None, None], c)
        for i, (stage, skip) in enumerate(zip(self.stages, reversed(skips))):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            if i < len(inject):
                x = x + inject[i]
            x = stage(torch.cat([x, skip], 1), c)
        return x


def build_codec(
    name: str, g_dim: int, width: int, norm: str, enc_cond_dim: int = 0, dec_cond_dim: int = 0,
    dec_out_channels: int = 3, dec_out_act: str = "sigmoid",
) -> tuple[nn.Module, nn.Module]:
    """Return ``(encoder, decoder)`` for codec ``name``. The decoder outputs a frame
    (3 channels, sigmoid) unless told otherwise (the transformation decoder reads
    raw mask logits and a generated image from it)."""
    if name == "dcgan64":
        return (
            DCGANEncoder(g_dim, width, norm, enc_cond_dim),
            DCGANDecoder(g_dim, width, norm, dec_cond_dim, dec_out_channels, dec_out_act),
        )
    if name == "vgg64":
        return (
            VGGEncoder(g_dim, width, norm, enc_cond_dim),
            VGGDecoder(g_dim, width, norm, dec_cond_dim, dec_out_channels, dec_out_act),
        )
    raise ConfigError(f"model.codec must be one of {CODECS}, got {name!r}")

