"""Frame quality metrics, per frame so that callers can average over time or sequences.

PSNR follows the assignment: frames in [0, 1], ``10 * log10(1 / MSE)`` per frame.
SSIM uses torchmetrics' implementation (Gaussian window 11, sigma 1.5, Wang et al. 2004).

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

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

MSE_FLOOR = 1e-10  # a perfect frame scores 100 dB instead of infinity
MOTION_THRESHOLD = 0.1  # a pixel moves when some channel changes by more than this (frames in [0, 1])

# one SSIM setting for the whole-frame and the moving-region scores
_SSIM_ARGS = dict(gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0, reduction="none")


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (..., C, H, W) in [0, 1] -> PSNR in dB per frame, shape (...)."""
    mse = ((pred.float() - target.float()) ** 2).mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(1.0 / mse.clamp_min(MSE_FLOOR))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (..., C, H, W) in [0, 1] -> SSIM per frame, shape (...)."""
    lead = pred.shape[:-3]
    p = pred.float().reshape(-1, *pred.shape[-3:])
    t = target.float().reshape(-1, *target.shape[-3:])
    s = structural_similarity_index_measure(p, t, **_SSIM_ARGS)
    return s.reshape(lead)


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

    pred, target (..., C, H, W) in [0, 1]; mask (..., H, W) bool, broadcastable as
    in :func:`masked_psnr`. Returns (...): the mean of torchmetrics' SSIM map over
    the masked pixels, NaN where the mask is empty.

    The map has one value per channel and pixel, each computed from an 11x11
    Gaussian neighbourhood (so pixels at the edge of the moving region also see
    some static surroundings). torchmetrics' whole-frame score (:func:`ssim`) is
    the plain mean of that map over channels and pixels (torchmetrics 1.9;
    versions before Lightning-AI/torchmetrics#2721, autumn 2024, averaged only
    the interior, without a 5-pixel border); here the map is averaged over
    the channels, then over the masked pixels, so an all-ones mask gives
    :func:`ssim`'s number.
    """
    lead, (C, H, W) = pred.shape[:-3], pred.shape[-3:]
    p = pred.float().reshape(-1, C, H, W)
    t = target.float().reshape(-1, C, H, W)
    _, full = structural_similarity_index_measure(p, t, return_full_image=True, **_SSIM_ARGS)  # (N, C, H, W)
    return _masked_mean(full.mean(dim=1).reshape(*lead, H, W), mask)
