"""The transformation decoder: move the previous frame's pixels instead of repainting them.

After CDNA (Finn, Goodfellow & Levine 2016, "Unsupervised learning for physical
interaction through video prediction") as SV2P and SAVP (Lee et al. 2018) use it
on the BAIR pushing data. From the predictor's output g_t the head predicts K
normalised k x k kernels; each is convolved with the previous frame (observed,
or the model's own prediction when it runs free), so an object that moves is
carried along with its texture instead of being redrawn. The codec's decoder
supplies, per pixel, a freshly generated image and the logits of M = K + 4
softmax masks that composite

    x^_t = sum_m mask_m * candidate_m,
    candidates = [K transformed previous frames, the previous frame x_{t-1},
                  the first frame x_0, the last observed frame before t, the generated image]

The static table is then copied from an observed frame (sharp, for free), the
arm and pushed objects are moved by the kernels, and the generator only has to
paint what was hidden (the table behind a moving object). Optional moved
candidates: a per-pixel flow (``model.flow``) and the previous frame shifted as a
whole by the arm's commanded move in the image (``model.arm_shift``, given by the
pose maps' positions), so the arm's motion does not have to be learned per direction.
With ``model.arm_gate`` one more candidate applies that shift only beside or ahead of the
gripper along its move (where it pushes) and keeps the previous frame behind it, so the
masks can move an object with the arm that pushes it without dragging one that the arm
pulls away from (the arm itself, whose fingers reach behind its centre, takes the ungated one).

At initialisation every kernel is (almost) the identity and the previous-frame
mask dominates, so the untrained model predicts "nothing moves": a sensible
start that training moves away from.

Coordinate mode (``model.coords``, :meth:`CDNAHead.forward_coords`): a kernel that
moves pixels by a fraction of a pixel blends neighbouring taps, so a free run
that moves its own predictions blurs them a little at every step. Instead, the
kernels (and masks) move a map of *source coordinates*: where each pixel of
x_{t-1} comes from in a reference frame (the last ground-truth frame fed in;
the identity map for a ground-truth x_{t-1}). Averaging coordinates moves a
pixel by a fraction without mixing colours, and the moved candidates sample the
sharp reference once, however many steps the model has run free.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BACKGROUNDS = ("previous", "first", "last_observed", "generated")
IDENTITY_WEIGHT = 0.9  # share of the centre tap in each kernel at initialisation
PREVIOUS_MASK_BIAS = 4.0  # initial logit advantage of the previous-frame mask
FLOW_MAX_PX = 6.0  # model.flow: the largest displacement per frame (px), FLOW_MAX_PX * tanh(raw)
# model.arm_gate: pixels more than ARM_GATE_PX (learned from there) behind the gripper's centre,
# along its move, keep the previous frame in the gated arm candidate; the gate's edge is ARM_GATE_EDGE_PX wide
ARM_GATE_PX = 3.0  # the synthetic gripper's radius (synth.EFF_RADIUS)
ARM_GATE_EDGE_PX = 0.5


def apply_kernels(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve every image with its own kernels.

    image (N, C, H, W), kernels (N, K, k, k) (k odd) -> (N, K, C, H, W), where
    out[n, j] = image[n] correlated with kernels[n, j] (zero displacement at the
    centre tap; borders replicated). A kernel with its mass one tap right of the
    centre reads the pixel to the right, so it moves the image one pixel left.
    """
    N, C, H, W = image.shape
    K, k = kernels.shape[1], kernels.shape[-1]
    p = k // 2
    x = F.pad(image, (p, p, p, p), mode="replicate").reshape(1, N * C, H + 2 * p, W + 2 * p)
    # grouped conv, one group per (sample, channel), K output channels per group
    w = kernels[:, None].expand(N, C, K, k, k).reshape(N * C * K, 1, k, k).to(x.dtype)
    out = F.conv2d(x, w, groups=N * C)  # (1, N*C*K, H, W)
    return out.view(N, C, K, H, W).transpose(1, 2)


class CDNAHead(nn.Module):
    """Kernels from g_t, masks and a generated image from the decoder, and the composite."""

    def __init__(self, g_dim: int, kernels: int, kernel_size: int, flow: bool = False, arm: bool = False,
                 arm_gate: bool = False, momentum: bool = False) -> None:
        super().__init__()
        if arm_gate and not arm:
            raise ValueError("CDNAHead(arm_gate=True) needs arm=True")
        self.n_kernels, self.kernel_size, self.flow, self.arm = kernels, kernel_size, flow, arm
        self.momentum = momentum  # coordinate mode only: the last step's motion repeated
        # the gate's margin behind the gripper's centre (px), learned
        self.arm_margin = nn.Parameter(torch.tensor(ARM_GATE_PX)) if arm_gate else None
        # moved candidates: the K kernels' (then the flow's, the arm shift's, the gated one's, the momentum's)
        self.n_moved = kernels + int(flow) + int(arm) + int(arm_gate) + int(momentum)
        self.n_masks = self.n_moved + len(BACKGROUNDS)
        self.kernel_logits = nn.Linear(g_dim, kernels * kernel_size**2)
        # Identity start: small weights, a bias that puts IDENTITY_WEIGHT on the centre tap.
        nn.init.normal_(self.kernel_logits.weight, std=0.01)
        taps = kernel_size**2
        centre = math.log(IDENTITY_WEIGHT * (taps - 1) / (1 - IDENTITY_WEIGHT))
        bias = torch.zeros(kernels, taps)
        bias[:, taps // 2] = centre
        with torch.no_grad():
            self.kernel_logits.bias.copy_(bias.flatten())
        mask_bias = torch.zeros(self.n_masks)
        mask_bias[self.n_moved + BACKGROUNDS.index("previous")] = PREVIOUS_MASK_BIAS
        self.mask_bias = nn.Parameter(mask_bias)
        if flow:  # flow = flow_gain * FLOW_MAX_PX * tanh(raw): zero flow (the identity) at the start
            self.flow_gain = nn.Parameter(torch.zeros(()))

    @property
    def decoder_channels(self) -> int:
        """Raw channels the codec's decoder must produce: generated RGB + mask logits (+ flow x, y)."""
        return 3 + self.n_masks + 2 * int(self.flow)

    def flow_grid(self, raw: torch.Tensor) -> torch.Tensor:
        """raw (N, 3 + M + 2, H, W) -> where each pixel reads from, (N, H, W, 2) grid_sample
        coordinates: the pixel's own centre plus the predicted flow (px, scaled to grid units)."""
        N, _, H, W = raw.shape
        flow_px = self.flow_gain * FLOW_MAX_PX * torch.tanh(raw[:, 3 + self.n_masks:].float())  # (N, 2, H, W)
        scale = torch.tensor([2.0 / W, 2.0 / H], device=raw.device).view(1, 2, 1, 1)
        return (identity_coords(N, H, W, raw.device) + flow_px * scale).permute(0, 2, 3, 1)

    def split(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """raw (N, decoder_channels, H, W) -> (generated image (N, 3, H, W) in [0, 1],
        softmax masks (N, M, H, W)), in fp32."""
        # one split, not two slices: its backward is one cat, a slice's a zero fill and a copy
        image, logits, _ = raw.float().split([3, self.n_masks, raw.shape[1] - 3 - self.n_masks], 1)
        masks = torch.softmax(logits + self.mask_bias[None, :, None, None], 1)
        return torch.sigmoid(image), masks

    def arm_gate(self, shift: torch.Tensor, origin: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Where the gated arm candidate takes the shifted image: shift, origin (N, 2) the arm's move and
        its position before it (x, y, grid units) -> (N, 1, H, W) in (0, 1): 1 beside and ahead of
        the gripper along the move, falling to 0 from ``arm_margin`` px behind its centre."""
        px = torch.tensor([W / 2.0, H / 2.0], device=shift.device)  # grid units -> px
        move = shift.float() * px
        direction = move / torch.sqrt((move**2).sum(1, keepdim=True) + 0.25**2)  # ~unit; ~0 at rest
        rel = (identity_coords(shift.shape[0], H, W, shift.device) - origin.float()[:, :, None, None]) * px[:, None, None]
        ahead = (rel * direction[:, :, None, None]).sum(1, keepdim=True)  # px along the move
        return torch.sigmoid((ahead + self.arm_margin) / ARM_GATE_EDGE_PX)

    def move(self, image: torch.Tensor, g: torch.Tensor, raw: torch.Tensor,
             shift: torch.Tensor | None = None, origin: torch.Tensor | None = None) -> torch.Tensor:
        """The moved candidates of ``image`` (N, C, H, W; colours or coordinates): the K kernels';
        with ``flow``, the image read at pixel + flow; with ``arm``, the image moved as a whole by
        ``shift`` (N, 2) (x, y in grid units: read at pixel - shift); with ``arm_gate`` also that
        shift only where :meth:`arm_gate` says, from the arm's position ``origin`` (N, 2) before
        the move -> (N, n_moved, C, H, W), fp32."""
        moved = apply_kernels(image.float(), self.kernels(g.float()))  # (N, K, C, H, W)
        extra = []
        if self.flow:
            extra.append(F.grid_sample(image.float(), self.flow_grid(raw), mode="bilinear",
                                       padding_mode="border", align_corners=False))
        if self.arm:
            if shift is None:
                raise ValueError("CDNAHead(arm=True) needs the arm's shift")
            N, _, H, W = image.shape
            grid = identity_coords(N, H, W, image.device) - shift.float()[:, :, None, None]
            shifted = F.grid_sample(image.float(), grid.permute(0, 2, 3, 1), mode="bilinear",
                                    padding_mode="border", align_corners=False)
            extra.append(shifted)
            if self.arm_margin is not None:
                if origin is None:
                    raise ValueError("CDNAHead(arm_gate=True) needs the arm's position")
                gate = self.arm_gate(shift, origin, H, W)
                extra.append(image.float() + gate * (shifted - image.float()))
        if extra:
            moved = torch.cat([moved] + [e[:, None] for e in extra], 1)
        return moved

    def kernels(self, g: torch.Tensor) -> torch.Tensor:
        """g (N, g_dim) -> normalised kernels (N, K, k, k), each summing to 1 (softmax over taps)."""
        N, k = g.shape[0], self.kernel_size
        logits = self.kernel_logits(g).float().view(N, self.n_kernels, k * k)
        return torch.softmax(logits, -1).view(N, self.n_kernels, k, k)

    def forward_coords(self, g, raw, previous, first, last_observed, ref, coords, shift=None, origin=None,
                       before=None):
        """Coordinate mode: the kernels move a source-coordinate map instead of colours, and the
        moved maps sample ``ref`` (a sharp observed frame) once. coords (N, 2, H, W): where each
        pixel of ``previous`` comes from in ``ref`` (grid_sample units); ``before`` (``momentum``
        only; None: coords) the same for the frame before it, so ``2 * coords - before`` repeats
        the last step's motion. Returns (frame, masks, coords_t)."""
        generated, masks = self.split(raw)
        N, _, H, W = previous.shape
        K = self.n_moved
        with torch.autocast(device_type=previous.device.type, enabled=False):
            moved = self.move(coords, g, raw, shift, origin)  # (N, K', 2, H, W)
            if self.momentum:
                ahead = 2 * coords.float() - (coords if before is None else before).float()
                moved = torch.cat([moved, ahead[:, None]], 1)  # (N, K, 2, H, W)
            # the K grids of a row stacked vertically: ref is sampled in one call without K copies
            grid = moved.permute(0, 1, 3, 4, 2).reshape(N, K * H, W, 2)
            warped = F.grid_sample(ref.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        warped = warped.view(N, 3, K, H, W).transpose(1, 2)  # (N, K, 3, H, W)
        m = masks.unsqueeze(2).unbind(1)  # one (N, 1, H, W) per mask
        frame = composite(m, warped.unbind(1), (previous, first, last_observed, generated))
        # where the frame came from moved or previous pixels, carry their coordinates. From slices
        # of masks, not from m: reusing m's views reorders the masks' gradient sum (1 ULP apart
        # from the code the demo's recorded numbers were trained with)
        w = masks[:, : K + 1]  # the moved candidates and previous
        total = w.sum(1, keepdim=True).clamp_min(1e-6)
        coords_t = (weighted_sum(w[:, :K].unsqueeze(2).unbind(1), moved.unbind(1)) + w[:, K, None] * coords.float()) / total
        return frame, masks, coords_t

    def forward(self, g, raw, previous, first, last_observed, shift=None, origin=None):
        """Composite one frame per row.

        g (N, g_dim); raw (N, decoder_channels, H, W) the decoder's output (no activation);
        previous, first, last_observed (N, 3, H, W) frames in [0, 1]; shift (N, 2) the arm's
        move in grid units (``arm`` only), origin (N, 2) the arm's position before it (``arm_gate``).
        Returns (frame (N, 3, H, W) in [0, 1], masks (N, M, H, W)).
        """
        if self.momentum:
            raise ValueError("CDNAHead(momentum=True) moves coordinates: use forward_coords")
        generated, masks = self.split(raw)
        # fp32 even under bf16 autocast: the grouped conv measured 10x slower in bf16 on CPU,
        # and pixel values mixed in bf16 lose about 1/255.
        with torch.autocast(device_type=previous.device.type, enabled=False):
            moved = self.move(previous, g, raw, shift, origin)  # (N, K, 3, H, W)
        frame = composite(masks.unsqueeze(2).unbind(1), moved.unbind(1), (previous, first, last_observed, generated))
        return frame, masks


def weighted_sum(weights, images) -> torch.Tensor:
    """sum_j weights[j] * images[j]: weights (N, 1, H, W) each, images (N, C, H, W) each.

    Sequences rather than stacked tensors: the callers pass ``unbind`` views, whose
    backward is one stack, where a slice per candidate costs a zero fill and an add each."""
    if len(weights) != len(images):
        raise ValueError(f"weighted_sum: {len(weights)} weights for {len(images)} images")
    out = weights[0] * images[0]
    for w, im in zip(weights[1:], images[1:]):
        out = out.addcmul_(w, im)
    return out


def composite(masks, moved, backgrounds) -> torch.Tensor:
    """sum_m masks[m] * candidate_m over the K moved images and then the backgrounds (in the
    order of BACKGROUNDS), in fp32, without stacking the candidates into one tensor. masks: the
    M = K + len(backgrounds) masks, (N, 1, H, W) each; moved and backgrounds (N, C, H, W) each."""
    return weighted_sum(masks, tuple(moved) + tuple(b.float() for b in backgrounds))


def identity_coords(N: int, H: int, W: int, device, dtype=torch.float32) -> torch.Tensor:
    """(N, 2, H, W) grid_sample coordinates (x, y) of every pixel centre (align_corners=False)."""
    ys = torch.linspace(-1 + 1 / H, 1 - 1 / H, H, device=device, dtype=dtype)
    xs = torch.linspace(-1 + 1 / W, 1 - 1 / W, W, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])[None].expand(N, 2, H, W)
