"""Recurrent modules of SVG: the frame predictor and the Gaussian LSTMs.

They take and return their state (``None`` starts a sequence) and accept a whole
sequence ``(B, T, in_dim)`` at once, so a teacher-forced rollout runs each LSTM
in a single call; a step-by-step rollout passes ``T = 1``.
"""

from __future__ import annotations

import torch
from torch import nn

State = tuple[torch.Tensor, torch.Tensor] | None


class PredictorLSTM(nn.Module):
    """Deterministic frame predictor: ``[h_{t-1}, z_t, c_t] -> g_t`` (tanh, like the encoder)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        y, state = self.lstm(self.embed(x), state)  # (B, T, hidden)
        return torch.tanh(self.out(y)), state


class GaussianLSTM(nn.Module):
    """Posterior q(z_t | x_{1:t}) or learned prior p(z_t | x_{1:t-1}): mean and log-variance heads."""

    def __init__(self, in_dim: int, hidden: int, z_dim: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.mu = nn.Linear(hidden, z_dim)
        self.logvar = nn.Linear(hidden, z_dim)

    def forward(self, x: torch.Tensor, state: State = None):
        y, state = self.lstm(self.embed(x), state)
        return self.mu(y), self.logvar(y), state


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with sigma = exp(logvar / 2) (Kingma & Welling 2013).

    The networks output the log-variance, which keeps sigma positive without a
    constraint and is numerically stable for small variances.
    """
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """Analytic KL(N(mu_q, var_q) || N(mu_p, var_p)), summed over the last (latent) axis."""
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0)
    return kl.sum(-1)
