"""Frame quality metrics, per frame so that callers can average over time or sequences.

PSNR follows the assignment: frames in [0, 1], ``10 * log10(1 / MSE)`` per frame.
SSIM is torchmetrics' definition (Gaussian window 11, sigma 1.5, Wang et al. 2004, on
reflect-padded frames; ``structural_similarity_index_measure`` with
``gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0``) computed here with the
Gaussian applied as two matrix products, one per axis: the same numbers up to float32
rounding (per pixel within 1e-4 of torchmetrics in float64, closer than torchmetrics' own
float32 map), 4x faster on the CPU, and the true frames' terms filtered once for all the
samples drawn for them (the tests check it against torchmetrics).

Metrics that see motion: on 64x64 pushing scenes most pixels are static table,
so a whole-frame score barely separates a model that moves the arm from one that
blurs a copy of the last observed frame. The *moving region* of a future frame
is where the true frame differs from the last observed one (:func:`motion_mask`);
:func:`masked_psnr` and :func:`masked_ssim` score only those pixels, the way
Deep Voxel Flow (Liu et al. 2017) scores motion regions. A frame whose mask is
empty has no moving-region score: NaN, for callers to leave out with
nan-aware means.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MSE_FLOOR = 1e-10  # a perfect frame scores 100 dB instead of infinity
MOTION_THRESHOLD = 0.1  # a pixel moves when some channel changes by more than this (frames in [0, 1])

# one SSIM setting for the whole-frame and the moving-region scores (torchmetrics' defaults
# with data_range 1: frames in [0, 1])
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
_SSIM_CHUNK = 1 << 24  # values per intermediate map (64 MiB in float32); larger inputs go in slices of dim 0


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (..., C, H, W) in [0, 1] -> PSNR in dB per frame, shape (...)."""
    mse = ((pred.float() - target.float()) ** 2).mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(1.0 / mse.clamp_min(MSE_FLOOR))


def _gaussian_filter_matrix(n: int, device) -> torch.Tensor:
    """(n, n) float32 matrix A such that ``x @ A`` filters the rows of x (length n) with the
    SSIM window: reflect-pad by half the window, then the normalised 1-D Gaussian over the
    valid positions, as torchmetrics' SSIM does (its 2-D kernel is the outer product of two
    such 1-D kernels, so one matrix per axis gives the same filter)."""
    half = SSIM_WINDOW // 2
    if n <= half:
        raise ValueError(f"SSIM needs frames of at least {half + 1} x {half + 1} pixels (reflect padding by {half}), "
                         f"got a side of {n}")
    d = torch.arange(SSIM_WINDOW, dtype=torch.float64) - half
    g = torch.exp(-0.5 * (d / SSIM_SIGMA) ** 2)
    g = g / g.sum()
    # row i: the unit signal e_i reflect-padded, then correlated with g at each output position
    padded = F.pad(torch.eye(n, dtype=torch.float64)[None], (half, half), mode="reflect")[0]  # (n, n + 2 half)
    return (padded.unfold(1, SSIM_WINDOW, 1) @ g).float().to(device)


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (..., C, H, W) in [0, 1], broadcastable (e.g. (B, S, F, C, H, W) samples
    against (B, 1, F, C, H, W) truths) -> the SSIM map, one value per channel and pixel,
    shape broadcast(...) + (C, H, W). Terms of the target alone are filtered at the
    target's own shape."""
    pred, target = pred.float(), target.float()
    shape = torch.broadcast_shapes(pred.shape, target.shape)
    if len(shape) > 3 and math.prod(shape) > _SSIM_CHUNK and shape[0] > 1:  # slices of dim 0 bound the memory
        pred, target = (x[(None,) * (len(shape) - x.dim())] for x in (pred, target))  # the same rank: dim 0 is shared
        step = max(1, _SSIM_CHUNK // math.prod(shape[1:]))
        part = lambda x, i: x[i : i + step] if x.shape[0] > 1 else x  # noqa: E731
        return torch.cat([ssim_map(part(pred, i), part(target, i)) for i in range(0, shape[0], step)])
    H, W = shape[-2:]
    along_w, along_h = _gaussian_filter_matrix(W, pred.device), _gaussian_filter_matrix(H, pred.device).T
    blur = lambda x: along_h @ (x @ along_w)  # noqa: E731
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_p, mu_t = blur(pred), blur(target)
    mu_pp, mu_tt, mu_pt = mu_p * mu_p, mu_t * mu_t, mu_p * mu_t
    var_p = (blur(pred * pred) - mu_pp).clamp_min_(0)  # variances clamped at 0, as torchmetrics
    var_t = (blur(target * target) - mu_tt).clamp_min_(0)
    cov = blur(pred * target) - mu_pt
    return ((2 * mu_pt + c1) * (2 * cov + c2)) / ((mu_pp + mu_tt + c1) * (var_p + var_t + c2))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (..., C, H, W) in [0, 1], broadcastable -> SSIM per frame, shape (...):
    the mean of :func:`ssim_map` over channels and pixels (torchmetrics' number)."""
    return ssim_map(pred, target).mean(dim=(-3, -2, -1))


def motion_mask(truth: torch.Tensor, last: torch.Tensor, threshold: float = MOTION_THRESHOLD) -> torch.Tensor:
    """The moving region of future frames.

    truth (..., C, H, W) true future frames, last (..., C, H, W) the last observed
    frame (broadcastable to truth, e.g. (B, 1, C, H, W) against (B, F, C, H, W)),
    both in [0, 1]. Returns a bool mask (..., H, W): True where
    ``max over channels |truth - last| > threshold`` (strictly greater).
    """
    return (truth.float() - last.float()).abs().amax(dim=-3) > threshold


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values (..., H, W), mask (..., H, W) bool, broadcastable -> mean over the masked
    pixels, shape (...); NaN where the mask is empty."""
    values, weight = torch.broadcast_tensors(values, mask.to(values.dtype))
    count = weight.sum(dim=(-2, -1))
    total = (values * weight).sum(dim=(-2, -1))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR on the masked pixels only.

    pred, target (..., C, H, W) in [0, 1]; mask (..., H, W) bool, broadcastable to
    the frames' leading shape (e.g. (B, 1, F, H, W) against (B, S, F, C, H, W)).
    Returns (...): ``10 log10(1 / MSE)`` with the MSE averaged over all C channels
    of the masked pixels (capped at 100 dB like :func:`psnr`); NaN where the mask
    is empty.
    """
    err = ((pred.float() - target.float()) ** 2).mean(dim=-3)  # (..., H, W): mean over channels
    mse = _masked_mean(err, mask)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(MSE_FLOOR))  # NaN stays NaN


def masked_ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SSIM on the masked pixels only.

    pred, target (..., C, H, W) in [0, 1], broadcastable; mask (..., H, W) bool,
    broadcastable as in :func:`masked_psnr`. Returns (...): the mean of the SSIM map
    over the masked pixels, NaN where the mask is empty. See :func:`ssim_scores` for both
    scores from one map.

    The map has one value per channel and pixel, each computed from an 11x11
    Gaussian neighbourhood (so pixels at the edge of the moving region also see
    some static surroundings). torchmetrics' whole-frame score (:func:`ssim`) is
    the plain mean of that map over channels and pixels (torchmetrics 1.9;
    versions before Lightning-AI/torchmetrics#2721, autumn 2024, averaged only
    the interior, without a 5-pixel border); here the map is averaged over
    the channels, then over the masked pixels, so an all-ones mask gives
    :func:`ssim`'s number.
    """
    return ssim_scores(pred, target, mask)[1]


def ssim_scores(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(:func:`ssim`, :func:`masked_ssim`) of the same frames from one SSIM map."""
    per_pixel = ssim_map(pred, target).mean(dim=-3)  # (..., H, W): mean over channels
    return per_pixel.mean(dim=(-2, -1)), _masked_mean(per_pixel, mask)
