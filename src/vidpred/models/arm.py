"""The arm's own latent (``model.arm_latent``): how far along its commanded move the arm gets.

Under causal conditioning the model knows where the commands send the arm, not whether it
gets there: in the synthetic world it stalls against an object too heavy to push, or slides
around one, and which objects are heavy is hidden. With ``model.arm_progress`` each predicted
step's commanded move is scaled by a factor alpha_t in (0, 2); this module makes that factor a
one-number latent u_t of its own, alpha_t = 2 * sigmoid(u_t), with

    q(u_t | recorded move, commanded move)      posterior: where the arm really went
    p(u_t | h_{t-1}, commanded move, s_{t-1})   learned prior (an LSTM): when it may stall,
                                                a mixture of two Gaussians

The posterior's mean starts at the logit of the least-squares progress that the recorded move
shows along the commanded one, so the pose maps draw the true arm from the first training
step, and a small net learns the rest. The prior is trained by the KL term like SVG's learned
prior, and a free run samples from it: a sample can show the arm stalled, another pushing on.
A stall lasts (the object stays heavy), so the prior reads whether the arm was stalled at the
step before: s_{t-1} = sigmoid(-2 (u_{t-1} + 2)), about 1 for a factor below 0.24, about 0 for
one near 1. It does not read u_{t-1} itself: trained on the posterior's u_{t-1}, which is within
0.1 of 0 where the arm moves freely, it took its own draws in a free run (0.35 apart) for the
start of a stall or a catch-up and wandered off, a step's factor anywhere from 0.1 to 1.9.
Reading frame t-1 and the command alone, after 600 training steps it gave every step of a test
window the same wide Gaussian (mean -0.9, log-variance 1.0).

The prior is a mixture of two Gaussians (initially: a free arm at u = 0, weight 0.95, and a
stalled one at u = -4) because the arm's progress is two things, not one: a free arm gets
exactly as far as commanded, and a stalled one nowhere. A single Gaussian must spread over
both; with it, the free steps of a free run wandered by 0.5 in u (a quarter of each commanded
move) and the mean sample lost 2.4 dB on the moving pixels. The KL against a mixture has no
closed form: it is the one-sample estimate log q(u) - log p(u) at the posterior's draw. A free
run draws the component with a step's first noise number (through the normal CDF) and u with
the second.
The recorded positions are read only where the posterior is (training, a posterior run, and
the observed frames), never for a frame a free run predicts.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vidpred.models.recurrent import State

MOVE_PX = 64.0  # positions are table fractions of the 64 px frame (the synthetic world's units)
MOVE_SCALE = 4.0  # moves enter the nets in units of 4 px
MIN_MOVE_PX = 0.5  # a commanded move shorter than this has no progress to read (u = 0)
STALL_LOGIT, STALL_SHARPNESS = -2.0, 2.0  # s = sigmoid(-2 (u + 2)): 1 for a stalled step, 0 for a free one
PROGRESS_CLAMP = 0.01  # the posterior's starting mean is the logit of progress / 2 in [0.01, 0.99]
ARM_HIDDEN = 32
POSTERIOR_LOGVAR_INIT = -4.0  # start confident: the recorded move says what the arm did
ARM_NOISE = 2  # noise numbers per step: the prior's mixture component, then the Gaussian draw
# the prior's components at initialisation: (logit weight, mean, log-variance) of a free arm, a stalled one
PRIOR_INIT = ((3.0, 0.0, -4.0), (0.0, -4.0, 0.0))
LOG_2PI = math.log(2 * math.pi)


def progress_logit(commanded: torch.Tensor, recorded: torch.Tensor) -> torch.Tensor:
    """(B, S, 3) raw moves twice -> (B, S, 1): logit(p / 2) of the least-squares progress p that
    the recorded move makes along the commanded one (x and y), clamped to [0.01, 0.99] before
    the logit; 0 (progress 1) where the command moves the arm less than ``MIN_MOVE_PX``."""
    c, r = commanded[..., :2] * MOVE_PX, recorded[..., :2] * MOVE_PX
    norm2 = (c * c).sum(-1, keepdim=True)
    half = ((c * r).sum(-1, keepdim=True) / norm2.clamp(min=MIN_MOVE_PX**2) / 2)
    half = half.clamp(PROGRESS_CLAMP, 1 - PROGRESS_CLAMP)
    return torch.where(norm2 >= MIN_MOVE_PX**2, torch.logit(half), torch.zeros_like(half))


def normal_log_prob(u: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (LOG_2PI + logvar + (u - mu) ** 2 / logvar.exp())


class MixturePrior(nn.Module):
    """An LSTM whose head gives, per step, the logit weight, mean and log-variance of each of
    ``len(PRIOR_INIT)`` Gaussian components of p(u_t)."""

    def __init__(self, in_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        K = len(PRIOR_INIT)
        self.embed = nn.Linear(in_dim, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 3 * K)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor(PRIOR_INIT).T.flatten())  # logits, then means, then log-variances

    def forward(self, x: torch.Tensor, state: State = None):
        """x (B, S, in_dim) -> ((logits, means, log-variances), each (B, S, K)), state."""
        y, state = self.lstm(self.embed(x), state)
        return tuple(self.head(y).chunk(3, -1)), state


class ArmLatent(nn.Module):
    def __init__(self, h_dim: int, rnn_size: int, prior_layers: int) -> None:
        super().__init__()
        self.posterior_net = nn.Sequential(nn.Linear(7, ARM_HIDDEN), nn.LeakyReLU(0.2), nn.Linear(ARM_HIDDEN, 2))
        last = self.posterior_net[-1]
        nn.init.zeros_(last.weight)  # mean: the progress logit itself; log-variance: a constant
        nn.init.zeros_(last.bias)
        with torch.no_grad():
            last.bias[1] = POSTERIOR_LOGVAR_INIT
        self.prior = MixturePrior(h_dim + 3 + 1, rnn_size, prior_layers)

    def posterior(self, commanded: torch.Tensor, recorded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw moves (B, S, 3) twice -> mean and log-variance (B, S, 1) of q(u_t), fp32."""
        commanded, recorded = commanded.float(), recorded.float()
        lg = progress_logit(commanded, recorded)
        x = torch.cat([commanded * (MOVE_PX / MOVE_SCALE), recorded * (MOVE_PX / MOVE_SCALE), lg], -1)
        with torch.autocast(device_type=x.device.type, enabled=False):
            d_mu, logvar = self.posterior_net(x).chunk(2, -1)
        return lg + d_mu, logvar

    def prior_step(self, h_prev: torch.Tensor, commanded: torch.Tensor, u_prev: torch.Tensor,
                   state: State = None) -> tuple[tuple[torch.Tensor, ...], State]:
        """h_prev (B, S, h_dim) encodings of frames t-1, commanded (B, S, 3) raw moves, u_prev
        (B, S, 1) the latents of the steps before (0, a free step, before the first) -> p(u_t) as
        (logit weights, means, log-variances), each (B, S, K), fp32, and the LSTM's state."""
        stalled = torch.sigmoid(-STALL_SHARPNESS * (u_prev.float() - STALL_LOGIT))
        x = torch.cat([h_prev.float(), commanded.float() * (MOVE_PX / MOVE_SCALE), stalled], -1)
        with torch.autocast(device_type=x.device.type, enabled=False):
            prior, state = self.prior(x, state)
        return prior, state

    @staticmethod
    def sample(prior: tuple[torch.Tensor, ...], eps: torch.Tensor) -> torch.Tensor:
        """A draw u (B, S, 1) from the mixture ``prior`` with noise eps (B, S, 2): the component
        where the normal CDF of eps[..., 0] falls among the cumulative weights, then its mean plus
        its standard deviation times eps[..., 1]."""
        logits, mu, logvar = prior
        uniform = 0.5 * (1 + torch.erf(eps[..., :1].float() / math.sqrt(2)))
        k = (logits.softmax(-1).cumsum(-1) < uniform).sum(-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
        return mu.gather(-1, k) + (0.5 * logvar.gather(-1, k)).exp() * eps[..., 1:].float()

    @staticmethod
    def kl(u: torch.Tensor, mu_q: torch.Tensor, logvar_q: torch.Tensor, prior: tuple[torch.Tensor, ...]):
        """One-sample estimate of KL(q || p), log q(u) - log p(u), at the posterior's draw u
        (B, S, 1) -> (B, S)."""
        logits, mu, logvar = prior
        log_p = torch.logsumexp(logits.log_softmax(-1) + normal_log_prob(u, mu, logvar), -1)
        return normal_log_prob(u, mu_q, logvar_q)[..., 0] - log_p

    @staticmethod
    def factor(u: torch.Tensor) -> torch.Tensor:
        """The commanded move's scale alpha = 2 * sigmoid(u), in (0, 2); 1 at u = 0."""
        return 2 * torch.sigmoid(u)
