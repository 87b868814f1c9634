"""Pose maps: where the condition puts the arm, drawn in image space for the decoder.

The condition embedding reaches the decoder as a vector (the predictor's input, or the
conditional convolutions' scale and shift). A vector says *that* the arm moved but not
*where* in the image: every layer would have to learn the position-to-pixel map anew,
and a model that runs free on its own frames leaves the arm where it last saw it (a grey
ghost at the last observed position, measured on the demo: docs/results.md). With
``model.pose_map`` the end-effector positions of frames t-1 and t that the condition
holds (dead-reckoned under ``condition=causal``) are drawn as two Gaussian heat maps and
added, through 1x1 convolutions, to the decoder's features at every scale and to its raw
output (masks and generated image of the transformation decoder), so the decoder can
paint the gripper where the commands take it and the table where it was. (Two more maps
for the arm's position in the first and last observed frames, which the transformation
decoder composites as backgrounds, measured no better on the demo: docs/results.md.)

Positions map to image coordinates through a learned affine map, initialised to the
synthetic world's (x, y in table fractions, 0..1 across the image; z ignored). On data
whose positions are in other units (BAIR's metres in the robot's frame) it starts wrong
and has to be learned: the BAIR presets leave pose maps off.
"""

from __future__ import annotations

import math

import torch
from torch import nn

POSE_SIGMA_PX = 1.5  # initial width of a heat map blob, in pixels of the 64x64 frame
IMAGE_PX = 64


class PoseMap(nn.Module):
    """positions (N, P, 3) raw -> heat maps (N, P, s, s) -> shifts of the decoder's features."""

    def __init__(self, stage_channels: list[int], stage_sizes: list[int], out_channels: int = 0,
                 points: int = 2) -> None:
        super().__init__()
        self.stage_sizes = list(stage_sizes)
        self.project = nn.Linear(3, 2)  # table position -> grid units (-1 .. 1 across the image)
        with torch.no_grad():
            self.project.weight.copy_(torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
            self.project.bias.fill_(-1.0)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(POSE_SIGMA_PX * 2 / IMAGE_PX)))
        self.stages = nn.ModuleList(nn.Conv2d(points, ch, 1) for ch in stage_channels)
        self.out = nn.Conv2d(points, out_channels, 1) if out_channels else None

    def heat(self, positions: torch.Tensor, size: int) -> torch.Tensor:
        """positions (N, P, 3) -> (N, P, size, size) in (0, 1]: a Gaussian blob per position,
        at least one pixel of this scale wide."""
        uv = self.project(positions.float())  # (N, P, 2) as (x, y)
        axis = torch.linspace(-1 + 1 / size, 1 - 1 / size, size, device=positions.device)
        sigma2 = torch.exp(2 * self.log_sigma) + (1 / size) ** 2
        # separable: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dy^2 / 2s^2) * exp(-dx^2 / 2s^2)
        gx = torch.exp(-((axis - uv[..., 0, None]) ** 2) / (2 * sigma2))  # (N, P, size)
        gy = torch.exp(-((axis - uv[..., 1, None]) ** 2) / (2 * sigma2))
        return gy[..., :, None] * gx[..., None, :]

    @staticmethod
    def _shift(conv: nn.Conv2d, heat: torch.Tensor) -> torch.Tensor:
        """The 1x1 convolution of the heat maps as one batched matrix product with the bias
        fused (2 input channels: the convolution's kernels measured 2-4x slower)."""
        N, P, H, W = heat.shape
        w = conv.weight.reshape(-1, P).to(heat.dtype)  # (C, P)
        C = w.shape[0]
        bias = conv.bias.to(heat.dtype)[None, :, None].expand(N, C, 1)
        return torch.baddbmm(bias, w.expand(N, C, P), heat.reshape(N, P, H * W)).view(N, C, H, W)

    def forward(self, positions: torch.Tensor):
        """positions (N, P, 3) -> (per-stage shifts [(N, C, s, s)], output shift (N, C_out, 64, 64) or None)."""
        stages = [self._shift(conv, self.heat(positions, s)) for conv, s in zip(self.stages, self.stage_sizes)]
        out = self._shift(self.out, self.heat(positions, IMAGE_PX)) if self.out is not None else None
        return stages, out
