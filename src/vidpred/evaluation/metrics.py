"""Frame quality metrics, per frame so that callers can average over time or sequences.

PSNR follows the assignment: frames in [0, 1], ``10 * log10(1 / MSE)`` per frame.
SSIM uses torchmetrics' implementation (Gaussian window 11, sigma 1.5, Wang et al. 2004).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

MSE_FLOOR = 1e-10  # a perfect frame scores 100 dB instead of infinity


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (..., C, H, W) in [0, 1] -> PSNR in dB per frame, shape (...)."""
    mse = ((pred.float() - target.float()) ** 2).mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(1.0 / mse.clamp_min(MSE_FLOOR))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (..., C, H, W) in [0, 1] -> SSIM per frame, shape (...)."""
    lead = pred.shape[:-3]
    p = pred.float().reshape(-1, *pred.shape[-3:])
    t = target.float().reshape(-1, *target.shape[-3:])
    s = structural_similarity_index_measure(
        p, t, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0, reduction="none"
    )
    return s.reshape(lead)
