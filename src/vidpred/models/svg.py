"""SVG (Denton & Fergus 2018) as an action-conditioned CVAE, and its one rollout function.

Shapes, batch-first throughout: frames ``(B, T, 3, 64, 64)`` in [0, 1], conditions
``(B, T, 7)`` raw (action 4 + end-effector position 3; the model normalises them
with train-split statistics stored as buffers).

Per step t = 1..T-1 (frame t is predicted from frames < t):

    h_{t-1}, skip = Enc(x_{t-1})            skip kept from the last observed frame
    z_t ~ q(z_t | x_{1:t})                  posterior (training / reconstruction)
    z_t ~ p(z_t | x_{1:t-1})                learned prior (sampling), or N(0, I)
    g_t = Pred([h_{t-1}, z_t, e_t])         e_t = embedding of the condition of step t
    x^_t = Dec(g_t, skip)

The condition of step t (``model.condition``): ``lab`` embeds (c_{t-1}, c_t) as the
assignment's starter does; c_t holds the end-effector position of frame t itself,
which a free run does not know. ``causal`` embeds the action that leads to frame t
(``a_{t - action_lag}``) and the positions of frames t - 1 and t by dead reckoning: the
position of the last observed frame o <= t - 1 plus the displacement commands given
since (where the commands have taken the arm): nothing of a frame not yet observed.

With ``model.seq_z`` a sequence latent w, drawn once per sequence, joins z_t in the
predictor's input at every step: q(w | x_{n_past-1}, x_{T-1}) in training, N(0, I) when
sampling. It is for what a whole sequence shares and its first frames do not show (how
slippery or heavy an object is), where a per-step z_t is inferred from one new frame at a
time and, under teacher forcing, from a frame whose predecessor already shows most of it.

and the loss is sum_t ||x_t - x^_t||^2 + beta * KL(q || p)  (docs/derivation.md).

Hierarchical latents (``levels >= 2``, after HAF-SVG, Lin et al. 2020): level 1 is
the SVG latent above; each lower level l is conditioned on level l-1 in both the
posterior q(z^l | x_{1:t}, z^{l-1}) and the prior p(z^l | x_{1:t-1}, z^{l-1}) and is
injected at its own decoder scale (level 2 at the coarsest). With ``align`` a
feature aligner predicts a flow from g_t and warps the skip features (of the
last observed or the previous frame, see below) toward the predicted frame
with ``grid_sample``.

Two decoders (``model.decoder``): ``pixel`` paints x^_t from (g_t, skips) as SVG
does; ``cdna`` moves the pixels of x_{t-1} with kernels predicted from g_t and
composites them with observed backgrounds and a generated image
(``models/transform.py``). Skips come from the last observed frame (SVG) or, with
``model.skip_frame=previous``, from x_{t-1}, so the decoder sees where the arm is now.
With ``model.pose_map`` the two end-effector positions of step t's condition are also
drawn as heat maps added to the decoder's features (``models/pose.py``), so it knows
where in the image the arm goes; with ``model.arm_progress`` those positions are predicted:
each step's commanded move scaled by a factor read from g_t and z_t (or, with
``model.arm_latent``, drawn from a latent of its own, ``models/arm.py``), so a sample
can show the arm stalled against a heavy object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidpred.config import ModelConfig
from vidpred.models.arm import ARM_NOISE, ArmLatent
from vidpred.models.codecs import build_codec, norm_groups, per_step_statistics
from vidpred.models.pose import PoseMap
from vidpred.models.recurrent import GaussianLSTM, PredictorLSTM, gaussian_kl, reparameterize
from vidpred.models.transform import CDNAHead, identity_coords

ACTION_DIM = 4  # a condition is (action (4), end-effector position); actions start with (dx, dy, dz)
MOVE_DIM = 3  # the displacement part of an action, summed by the causal condition
MAX_LEVELS = 5  # level l >= 2 is injected at decoder stage l - 2; decoders have 4 stages
FLOW_GRID = 8  # resolution of the aligner's predicted flow
PROGRESS_Z_INIT = 0.01  # std of model.arm_progress's initial weights on z_t


@dataclass
class RolloutOutput:
    pred: torch.Tensor
    """(B, T-1, 3, H, W): predictions of frames 1..T-1 (future ones are ``pred[:, n_past-1:]``)."""
    kl: torch.Tensor
    """(B, T-1, levels (+1 with ``model.arm_latent``, +1 with ``model.seq_z``)): KL(q || p) per
    step and latent level, summed over latent dims (zeros where z came from the prior); the arm
    latent's KL, if any, follows the levels, and the sequence latent's, if any, is the last
    column, spread evenly over the steps."""
    arm: torch.Tensor | None = None
    """(B, T-1, 3) with ``model.arm_progress``: the arm positions the model predicted for frames
    1..T-1 (raw units, fp32), else None."""


class SequencePosterior(nn.Module):
    """q(w | x_{n_past-1}, x_{T-1}) of the sequence latent (``model.seq_z``): a small conv net
    over the last observed frame and the window's last frame side by side, which shows where
    the arm stalled and how far each pushed object went."""

    def __init__(self, width: int, w_dim: int) -> None:
        super().__init__()
        layers, ch = [], 6
        for i in range(4):  # 64 -> 4 px
            out = width * 2**i
            layers += [nn.Conv2d(ch, out, 4, 2, 1), nn.GroupNorm(norm_groups(out, 4), out), nn.LeakyReLU(0.2)]
            ch = out
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(ch * 16, 2 * w_dim))

    def forward(self, last_observed: torch.Tensor, final: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) twice -> mean and log-variance (B, w_dim)."""
        mu, logvar = self.net(torch.cat([last_observed, final], 1)).chunk(2, -1)
        return mu, logvar


class SVG(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.levels > MAX_LEVELS:
            from vidpred.errors import ConfigError

            raise ConfigError(f"model.levels must be <= {MAX_LEVELS}, got {cfg.levels}")
        E, Z, L, G = cfg.cond_embed, cfg.z_dim, cfg.levels, cfg.g_dim
        self.transform = (CDNAHead(G, cfg.kernels, cfg.kernel_size, cfg.flow, cfg.arm_shift, cfg.arm_gate,
                                   cfg.momentum)
                          if cfg.decoder == "cdna" else None)
        self.encoder, self.decoder = build_codec(
            cfg.codec,
            G,
            cfg.width,
            cfg.norm,
            enc_cond_dim=E if cfg.cond_conv == "both" else 0,
            dec_cond_dim=E if cfg.cond_conv != "none" else 0,
            # the transformation decoder reads a generated image and mask logits, raw
            dec_out_channels=3 if self.transform is None else self.transform.decoder_channels,
            dec_out_act="sigmoid" if self.transform is None else "none",
        )
        # lab: e_t embeds (c_{t-1}, c_t); causal: (a_{t-lag}, reckoned p_{t-1}, reckoned p_t)
        step_in = 2 * cfg.cond_dim if cfg.condition == "lab" else cfg.cond_dim + MOVE_DIM
        self.step_cond = nn.Linear(step_in, E) if E > 0 else None
        # The encoder's conditional convs see the condition of the frame itself (causal:
        # as known when that frame is encoded, so a fed-back prediction gets no true position).
        self.frame_cond = nn.Linear(step_in // 2 if cfg.condition == "lab" else step_in, E) \
            if cfg.cond_conv == "both" else None
        self.posterior = nn.ModuleList(
            GaussianLSTM(G + (Z if l else 0), cfg.rnn_size, Z, cfg.posterior_layers) for l in range(L)
        )
        self.prior = (
            nn.ModuleList(GaussianLSTM(G + (Z if l else 0), cfg.rnn_size, Z, cfg.prior_layers) for l in range(L))
            if cfg.prior == "learned"
            else None
        )
        self.seq_posterior = SequencePosterior(cfg.width, cfg.seq_z) if cfg.seq_z else None
        self.predictor = PredictorLSTM(G + Z + cfg.seq_z + E, cfg.rnn_size, G, cfg.predictor_layers)
        # Lower latent levels shift the decoder's features at their own scale.
        self.inject = nn.ModuleList(nn.Linear(Z, ch) for ch in self.decoder.stage_in_channels[: L - 1])
        # model.pose_map: the arm positions of frames t-1 and t drawn as heat maps for the decoder
        self.pose = PoseMap(self.decoder.stage_in_channels, self.decoder.stage_in_sizes,
                            self.transform.decoder_channels if self.transform is not None else 0) \
            if cfg.pose_map else None
        # model.arm_progress: how far along its commanded move the arm gets at each step, from
        # (g_t, z_t). 2 * sigmoid(0) = 1: dead reckoning at initialisation, but for small random
        # weights on z_t, so that from the first step the posterior gets a gradient through it
        # (with all weights zero none reaches z until g_t carries a stall by itself).
        self.progress = nn.Linear(G + Z, 1) if cfg.arm_progress and not cfg.arm_latent else None
        if self.progress is not None:
            nn.init.zeros_(self.progress.weight)
            nn.init.normal_(self.progress.weight[:, G:], std=PROGRESS_Z_INIT)
            nn.init.zeros_(self.progress.bias)
        # model.arm_latent: that factor as a latent of its own, with a posterior and a learned prior
        self.arm = ArmLatent(G, cfg.rnn_size, cfg.prior_layers) if cfg.arm_latent else None
        self.flow = nn.Linear(G, 2 * FLOW_GRID * FLOW_GRID) if cfg.align else None
        if self.flow is not None:  # start as the identity warp
            nn.init.zeros_(self.flow.weight)
            nn.init.zeros_(self.flow.bias)
        self.register_buffer("cond_mean", torch.zeros(cfg.cond_dim))
        self.register_buffer("cond_std", torch.ones(cfg.cond_dim))
        fmt = cfg.memory_format
        self.channels_last = fmt == "channels_last" or (fmt == "auto" and cfg.codec == "vgg64")
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def set_condition_stats(self, mean, std) -> None:
        self.cond_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.cond_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, frames, conds, n_past: int, **kwargs) -> "RolloutOutput":
        """Same as :func:`rollout`; a forward lets DistributedDataParallel wrap the model."""
        return rollout(self, frames, conds, n_past, **kwargs)

    # -- pieces used by the rollout -------------------------------------------------

    def embed_conditions(self, conds: torch.Tensor, n_past: int):
        """conds (B, T, 7) raw -> (step embeddings (B, T-1, E) or None, frame embeddings (B, T, E)
        or None, pose (B, T-1, 2, 3) or None: for ``model.pose_map``, the raw end-effector
        positions of step t's frames t-1 and t as the condition holds them)."""
        c = (conds - self.cond_mean) / self.cond_std
        T = conds.shape[1]
        t = torch.arange(T, device=conds.device)
        # predicting frame t: last observed frame before t; encoding frame j: at or before j
        observed = (t[1:] - 1).clamp(max=n_past - 1)
        pose = None
        if self.cfg.condition == "lab":
            step_in, frame_in = torch.cat([c[:, :-1], c[:, 1:]], -1), c
            if self.pose is not None:
                pose = torch.stack([conds[:, :-1, ACTION_DIM:], conds[:, 1:, ACTION_DIM:]], 2)
        else:
            step_in = self.causal_conditions(conds, t[1:], observed)
            frame_in = self.causal_conditions(conds, t, t.clamp(max=n_past - 1))
            if self.pose is not None:
                pose = self.reckoned_positions(conds, t[1:], observed)
        step = self.step_cond(step_in) if self.step_cond is not None else None
        frame = self.frame_cond(frame_in) if self.frame_cond is not None else None
        return step, frame, pose

    def causal_conditions(self, conds: torch.Tensor, frame: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """The causal condition of frames ``frame`` (S,) given the last observed frames
        ``observed`` (S,) <= frame, (B, S, cond_dim + 3), normalised: the action leading to the
        frame, and the end-effector positions of the frame before and of the frame itself as
        dead reckoning tells them: the last observed position plus the displacement commands
        given since, or the recorded position of a frame already observed (the pair the lab
        condition reads from the data, with no position of a frame not yet observed). Dead reckoning takes an action's (dx, dy, dz) to be a
        displacement in position units, true of the synthetic world and of BAIR's commands.
        An action before the window (frame 0 with action_lag 1) is the mean action."""
        lag = self.cfg.action_lag
        mean, std = self.cond_mean, self.cond_std
        a = (conds[..., :ACTION_DIM] - mean[:ACTION_DIM]) / std[:ACTION_DIM]
        idx = frame - lag
        action = a[:, idx.clamp(min=0)] * (idx >= 0).to(a.dtype)[None, :, None]
        p = (self.reckoned_positions(conds, frame, observed) - mean[ACTION_DIM:]) / std[ACTION_DIM:]
        return torch.cat([action, p[:, :, 0], p[:, :, 1]], -1)

    def reckoned_positions(self, conds: torch.Tensor, frame: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Raw end-effector positions (B, S, 2, 3) of frames ``frame - 1`` and ``frame`` (S,) given
        the last observed frames ``observed`` (S,): recorded for frames before ``observed``,
        else the position of ``observed`` plus the displacement commands given since."""
        lag = self.cfg.action_lag
        # positions: p_o + sum of moves a_{k - lag}, k = o+1..f, through a prefix sum S[j] = sum_{i<j} a_i
        moves = torch.zeros_like(conds[..., ACTION_DIM:])
        moves[..., :MOVE_DIM] = conds[..., :MOVE_DIM]
        prefix = torch.cat([torch.zeros_like(moves[:, :1]), moves.cumsum(1)], 1)
        start = prefix[:, observed - lag + 1]

        def reckoned(f: torch.Tensor) -> torch.Tensor:  # position of frame f
            since = prefix[:, (torch.maximum(f, observed) - lag + 1)] - start
            return torch.where((f < observed)[:, None], conds[:, f.clamp(min=0), ACTION_DIM:],
                               conds[:, observed, ACTION_DIM:] + since)  # f < o: observed, recorded

        return torch.stack([reckoned(frame - 1), reckoned(frame)], 2)

    def progress_factor(self, g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``model.arm_progress`` without ``arm_latent``: the factor ``2 * sigmoid(head(g, z))``
        (B, S, 1), fp32, from g (B, S, g_dim) and level 1's latent z (B, S, z_dim)."""
        with torch.autocast(device_type=g.device.type, enabled=False):
            return 2 * torch.sigmoid(self.progress(torch.cat([g, z], -1).float()))

    def progress_pose(self, alpha: torch.Tensor, pose: torch.Tensor, first: int, n_past: int,
                      carry: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``model.arm_progress``: the positions of steps ``first`` .. ``first + S - 1`` (0-based; step s
        predicts frame s + 1) with each step's commanded move scaled by ``alpha`` (B, S, 1).

        pose (B, S, 2, 3): raw dead-reckoned positions of frames t-1 and t (see
        :meth:`embed_conditions`), carry (B, 3): the position this gave the frame before ``first``
        (None at step 0). A step whose frame t-1 is observed starts from its recorded position; a
        later one from where the previous step left the arm. Returns the positions (B, S, 2, 3),
        fp32, and the carry for the next step."""
        with torch.autocast(device_type=pose.device.type, enabled=False):
            alpha = alpha.float()
            pose = pose.float()
            out = []
            for j in range(pose.shape[1]):
                start = pose[:, j, 0] if first + j < n_past or carry is None else carry
                carry = start + alpha[:, j] * (pose[:, j, 1] - pose[:, j, 0])
                out.append(torch.stack([start, carry], 1))
        return torch.stack(out, 1), carry

    def arm_latents(self, h_prev: torch.Tensor, commanded: torch.Tensor, recorded: torch.Tensor | None,
                    eps: torch.Tensor, u_prev: torch.Tensor | None, state, use_posterior: bool):
        """``model.arm_latent`` for S steps: the latents u (B, S, 1), their KL (B, S) and the
        prior's new state.

        h_prev (B, S, g) encodings of frames t-1, commanded and recorded (B, S, 3) raw moves
        (recorded: read only with ``use_posterior``), eps (B, S, 2) standard normal noise (see
        :meth:`ArmLatent.sample`; the posterior reads the second number), u_prev
        (B, 1, 1) the latent of the step before (None: the window's start, taken as 0), state the
        prior's. With ``use_posterior`` u comes from q and the prior runs over all S steps on it
        (training); else from the prior, one step (S = 1) at a time, with KL 0."""
        B, S = eps.shape[:2]
        first = torch.zeros(B, 1, 1, device=eps.device) if u_prev is None else u_prev.float()
        if not use_posterior:
            prior, state = self.arm.prior_step(h_prev, commanded, first, state)
            return self.arm.sample(prior, eps), torch.zeros(B, S, device=eps.device), state
        mu_q, lv_q = self.arm.posterior(commanded, recorded)
        u = reparameterize(mu_q, lv_q, eps[..., 1:].float())
        prior, state = self.arm.prior_step(h_prev, commanded, torch.cat([first, u[:, :-1]], 1), state)
        return u, self.arm.kl(u, mu_q, lv_q, prior), state

    def encode(self, frames: torch.Tensor, frame_cond: torch.Tensor | None = None):
        """frames (B, S, 3, H, W) -> h (B, S, g), skips [(B, S, C, h, w)], all frames in one batched pass."""
        B, S = frames.shape[:2]
        c = frame_cond.flatten(0, 1) if frame_cond is not None else None
        x = frames.flatten(0, 1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with per_step_statistics(self.encoder, S):  # batch norm: statistics per step, as the step loop sees them
            h, skips = self.encoder(x, c)
        return h.view(B, S, -1), [s.view(B, S, *s.shape[1:]) for s in skips]

    def decode(self, g: torch.Tensor, skips: list[torch.Tensor], z: torch.Tensor, step_cond, context=None,
               pose=None):
        """g (B, S, g_dim), skips [(B, S, C, h, w)], z (B, S, levels*z_dim), pose (B, S, 2, 3)
        raw positions for ``model.pose_map`` (else None, see :meth:`embed_conditions`)
        -> (frames (B, S, 3, H, W), coords (B, S, 2, H, W) or None).

        context (``decoder=cdna`` only): ``(previous (B, S, 3, H, W), first (B, 3, H, W),
        last_observed (B, S, 3, H, W), ref (B, S, 3, H, W), coords (B, S, 2, H, W)[, coords_before
        (B, S, 2, H, W)])``: the frames the transformation decoder moves and composites and, with
        ``model.coords``, the frame the coordinates point into and where each pixel of ``previous``
        comes from in it (see ``models/transform.py``); ``model.momentum`` also reads where each pixel
        of the frame before came from (as coords; absent: coords, no motion). The returned coords
        are the same for the predicted frame.
        """
        B, S = g.shape[:2]
        g = g.flatten(0, 1)
        skips = [s.flatten(0, 1) for s in skips]
        if self.flow is not None:
            skips = self._align(skips, g)
        Z = self.cfg.z_dim
        zf = z.flatten(0, 1)
        inject = [proj(zf[:, (l + 1) * Z : (l + 2) * Z])[:, :, None, None] for l, proj in enumerate(self.inject)]
        out_shift = shift = origin = None
        if self.pose is not None:
            maps, out_shift = self.pose(pose.flatten(0, 1))
            if self.cfg.arm_shift:  # the arm's move over the step in grid units, frame t-1 -> t
                with torch.autocast(device_type=pose.device.type, enabled=False):  # bf16: 1/4 px steps
                    uv = self.pose.project(pose.flatten(0, 1).float())  # (N, 2 positions, (x, y))
                shift, origin = uv[:, 1] - uv[:, 0], uv[:, 0]
            inject = [m + inject[i] if i < len(inject) else m for i, m in enumerate(maps)]
        c = step_cond.flatten(0, 1) if (step_cond is not None and self.cfg.cond_conv != "none") else None
        with per_step_statistics(self.decoder, S):
            x = self.decoder(g, skips, c, inject)
        if out_shift is not None:  # the transformation decoder's raw masks and generated image
            x = x + out_shift
        coords_t = None
        if self.transform is not None:
            previous, first, last, ref, coords = context[:5]
            before = context[5] if len(context) > 5 else None  # None: no motion before (forward_coords)
            first = first[:, None].expand(B, S, *first.shape[1:])
            if self.cfg.coords:
                x, _, coords_t = self.transform.forward_coords(
                    g, x, previous.flatten(0, 1), first.flatten(0, 1), last.flatten(0, 1),
                    ref.flatten(0, 1), coords.flatten(0, 1), shift, origin,
                    None if before is None else before.flatten(0, 1))
                coords_t = coords_t.view(B, S, *coords_t.shape[1:])
            else:
                x, _ = self.transform(g, x, previous.flatten(0, 1), first.flatten(0, 1), last.flatten(0, 1), shift, origin)
        return x.view(B, S, *x.shape[1:]), coords_t

    def _align(self, skips: list[torch.Tensor], g: torch.Tensor) -> list[torch.Tensor]:
        """Warp skip features with a flow predicted from g (the aligner of HAF-SVG)."""
        N = g.shape[0]
        flow = torch.tanh(self.flow(g)).view(N, 2, FLOW_GRID, FLOW_GRID)  # in normalised [-1, 1] units
        out = []
        for s in skips:
            H, W = s.shape[-2:]
            f = F.interpolate(flow, size=(H, W), mode="bilinear", align_corners=False)
            ys = torch.linspace(-1 + 1 / H, 1 - 1 / H, H, device=s.device, dtype=s.dtype)
            xs = torch.linspace(-1 + 1 / W, 1 - 1 / W, W, device=s.device, dtype=s.dtype)
            base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2) as (x, y)
            grid = base.unsqueeze(0) + f.permute(0, 2, 3, 1).to(s.dtype)
            out.append(F.grid_sample(s, grid, mode="bilinear", padding_mode="border", align_corners=False))
        return out

    def latents(self, h_target, h_prev, eps, post_state, prior_state, use_posterior: bool):
        """Sample z for S steps at every level.

        h_target (B, S, g) encodings of the frames being predicted (posterior input;
        unused when sampling from the prior), h_prev (B, S, g) encodings of the
        frames before them, eps (B, S, levels*z) standard normal noise.
        Returns z (B, S, levels*z), kl (B, S, levels) and the new states.
        """
        Z = self.cfg.z_dim
        zs, kls, post_out, prior_out = [], [], [], []
        z_above = None
        for l in range(self.cfg.levels):
            above = [] if z_above is None else [z_above]
            if self.prior is not None:
                mu_p, lv_p, sp = self.prior[l](torch.cat([h_prev, *above], -1), prior_state[l])
            else:
                mu_p = lv_p = torch.zeros_like(eps[..., :Z])
                sp = None
            eps_l = eps[..., l * Z : (l + 1) * Z]
            if use_posterior:
                mu_q, lv_q, sq = self.posterior[l](torch.cat([h_target, *above], -1), post_state[l])
                z = reparameterize(mu_q, lv_q, eps_l)
                # in fp32 even under bf16 autocast: in bf16 the small KL of a near-collapsed
                # posterior rounds to negative values
                kl = gaussian_kl(mu_q.float(), lv_q.float(), mu_p.float(), lv_p.float())
            else:
                z = reparameterize(mu_p, lv_p, eps_l)
                kl = torch.zeros_like(z[..., 0])
                sq = post_state[l]
            zs.append(z)
            kls.append(kl)
            post_out.append(sq)
            prior_out.append(sp)
            z_above = z
        return torch.cat(zs, -1), torch.stack(kls, -1), post_out, prior_out

    def sequence_latent(self, frames, n_past: int, eps: torch.Tensor, use_posterior: bool):
        """The sequence latent w (B, seq_z) and its KL (B,) against N(0, I): from the posterior on
        ``frames`` (B, T, ...) when ``use_posterior``, else ``eps`` itself (a prior draw, KL 0)."""
        if not use_posterior:
            return eps, torch.zeros_like(eps[:, 0])
        mu, logvar = self.seq_posterior(frames[:, n_past - 1], frames[:, -1])
        zero = torch.zeros_like(mu)
        return reparameterize(mu, logvar, eps), gaussian_kl(mu.float(), logvar.float(), zero.float(), zero.float())


def _last_observed_index(T: int, n_past: int, device) -> torch.Tensor:
    """For steps t = 1..T-1, the last observed frame before t: x_{t-1} while observed, then x_{n_past-1}."""
    return torch.arange(T - 1, device=device).clamp(max=n_past - 1)


def rollout(
    model: SVG,
    frames: torch.Tensor,
    conds: torch.Tensor,
    n_past: int,
    *,
    use_posterior: bool = True,
    teacher_forcing: bool = True,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> RolloutOutput:
    """Run the model over a window: training, validation and sampling all come through here.

    frames (B, T, 3, H, W): ground truth; with ``use_posterior=False`` only the
        first ``n_past`` frames are read, so ``T_frames >= n_past`` suffices.
    conds (B, T, 7): raw conditions for every step (their length sets T).
    use_posterior: z_t from q(z_t | x_{1:t}) at every step (training, posterior
        reconstruction); otherwise from q while t < n_past (warming the LSTMs up on
        the observed frames, as SVG does) and from the prior after.
    teacher_forcing: after the observed frames, feed the ground-truth x_{t-1}
        (True) or the model's own prediction (False). Sampling implies False.
    noise (B, T-1, cfg.noise_dim): the standard normal eps of the
        reparameterisation (z_t at every level; with ``model.seq_z`` the sequence
        latent's eps follows in the first step's row; with ``model.arm_latent`` the arm
        latent's two, its prior's component and its draw, come last); drawn with ``generator``
        when None.
    """
    B, T = conds.shape[:2]
    L, Z = model.cfg.levels, model.cfg.z_dim
    if frames.shape[1] < (T if use_posterior else n_past):
        raise ValueError(f"rollout needs {T if use_posterior else n_past} frames, got {frames.shape[1]}")
    if noise is None:
        noise = torch.randn(B, T - 1, model.cfg.noise_dim, generator=generator, device=frames.device,
                            dtype=frames.dtype)
    elif noise.shape[-1] != model.cfg.noise_dim:
        raise ValueError(f"rollout's noise must have model.cfg.noise_dim = {model.cfg.noise_dim} numbers per step, "
                         f"got {noise.shape[-1]}")
    step_cond, frame_cond, pose = model.embed_conditions(conds, n_past)
    w = kl_w = None
    seq_end = L * Z + model.cfg.seq_z
    if model.seq_posterior is not None:
        w, kl_w = model.sequence_latent(frames[:, :T], n_past, noise[:, 0, L * Z : seq_end], use_posterior)
    arm = None
    if model.arm is not None:  # (noise, commanded moves, recorded moves), each (B, T-1, ...)
        arm = (noise[..., seq_end : seq_end + ARM_NOISE], pose[:, :, 1] - pose[:, :, 0],
               conds[:, 1:, ACTION_DIM:] - conds[:, :-1, ACTION_DIM:])
    noise = noise[..., : L * Z]
    if use_posterior and teacher_forcing:
        out = _rollout_teacher_forced(model, frames, n_past, noise, step_cond, frame_cond, pose, w, arm)
    else:
        out = _rollout_stepwise(model, frames, n_past, noise, step_cond, frame_cond, pose, use_posterior,
                                teacher_forcing, w, arm)
    if kl_w is not None:  # the sequence latent's KL as one more level, shared out over the steps
        out.kl = torch.cat([out.kl, (kl_w / (T - 1))[:, None, None].expand(B, T - 1, 1).to(out.kl.dtype)], -1)
    return out


def _rollout_stepwise(
    model: SVG, frames, n_past, noise, step_cond, frame_cond, pose, use_posterior: bool, teacher_forcing: bool,
    w: torch.Tensor | None = None, arm_in: tuple | None = None,
) -> RolloutOutput:
    """Step by step: ground truth is encoded in one batched pass, predicted frames
    only as they are fed back."""
    B, T = noise.shape[0], noise.shape[1] + 1
    L = model.cfg.levels
    n_known = T if use_posterior else n_past
    fc = lambda a, b: None if frame_cond is None else frame_cond[:, a:b]  # noqa: E731
    h_gt, skips_gt = model.encode(frames[:, :n_known], fc(0, n_known))
    from_previous = model.cfg.skip_frame == "previous"
    post_state = [None] * L
    prior_state = [None] * L
    pred_state = None
    preds, kls, arms = [], [], []
    skips = None
    last_seen = None
    # model.coords: ref is the last ground-truth frame fed in, coords where each pixel of
    # x_{t-1} comes from in it (the identity for a ground-truth x_{t-1}); a free run keeps
    # ref and moves the coordinates, so every prediction samples an observed frame once.
    H, W = frames.shape[-2:]
    ident = identity_coords(B, H, W, frames.device)[:, None] if model.cfg.coords else None  # (B, 1, 2, H, W)
    ref = coords = before = None  # before: the coords of x_{t-2} (model.momentum)
    arm = None  # model.arm_progress: the arm's position in the frame last predicted
    u = arm_state = None  # model.arm_latent: the last step's latent and its prior's state
    for t in range(1, T):
        if t - 1 < n_past or (teacher_forcing and t - 1 < n_known):
            h_prev = h_gt[:, t - 1 : t]
            x_prev = frames[:, t - 1 : t]
            ref, coords = x_prev, ident
            before = ident  # the motion into a ground-truth frame is not known: none
            if t - 1 < n_past:
                last_seen = x_prev
            if t - 1 < n_past or from_previous:
                skips = [s[:, t - 1 : t] for s in skips_gt]
        else:
            x_prev = preds[-1]
            h_prev, skips_pred = model.encode(x_prev, fc(t - 1, t))
            if from_previous:
                skips = skips_pred
        posterior_now = use_posterior or t < n_past
        h_tgt = h_gt[:, t : t + 1] if posterior_now else None
        z, kl, post_state, prior_state = model.latents(
            h_tgt, h_prev, noise[:, t - 1 : t], post_state, prior_state, posterior_now
        )
        e = None if step_cond is None else step_cond[:, t - 1 : t]
        z_top = z[..., : model.cfg.z_dim]  # level 1 drives the dynamics; lower levels go to the decoder
        inp = [h_prev, z_top] + ([w[:, None]] if w is not None else []) + ([e] if e is not None else [])
        g, pred_state = model.predictor(torch.cat(inp, -1), pred_state)
        pose_t = None if pose is None else pose[:, t - 1 : t]
        if model.cfg.arm_progress:
            if arm_in is not None:
                eps_u, commanded, recorded = (a[:, t - 1 : t] for a in arm_in)
                u, kl_u, arm_state = model.arm_latents(h_prev, commanded, recorded, eps_u, u, arm_state,
                                                       posterior_now)
                kl = torch.cat([kl, kl_u[..., None].to(kl.dtype)], -1)
                alpha = model.arm.factor(u)
            else:
                alpha = model.progress_factor(g, z_top)
            pose_t, arm = model.progress_pose(alpha, pose_t, t - 1, n_past, arm)
            arms.append(arm[:, None])
        if not use_posterior:
            kl = torch.zeros_like(kl)  # sampling: the KL is not an objective here
        pred, coords_t = model.decode(g, skips, z, e, (x_prev, frames[:, 0], last_seen, ref, coords, before), pose_t)
        preds.append(pred)
        # where the predicted frame's pixels come from in ref (None without model.coords), and the step's before
        before, coords = coords, coords_t
        kls.append(kl)
    return RolloutOutput(pred=torch.cat(preds, 1), kl=torch.cat(kls, 1),
                         arm=torch.cat(arms, 1) if arms else None)


def _rollout_teacher_forced(model: SVG, frames, n_past, noise, step_cond, frame_cond, pose,
                            w: torch.Tensor | None = None, arm_in: tuple | None = None) -> RolloutOutput:
    """All inputs are ground truth, so every LSTM runs over the whole window in one call
    and every frame is encoded and decoded in one batched pass."""
    B, T = frames.shape[:2]
    h, skips = model.encode(frames, frame_cond)  # h (B, T, g)
    L = model.cfg.levels
    z, kl, _, _ = model.latents(h[:, 1:], h[:, :-1], noise, [None] * L, [None] * L, True)
    inp = [h[:, :-1], z[..., : model.cfg.z_dim]] + ([w[:, None].expand(B, T - 1, w.shape[-1])] if w is not None
                                                   else []) + ([step_cond] if step_cond is not None else [])
    g, _ = model.predictor(torch.cat(inp, -1))  # (B, T-1, g)
    last = _last_observed_index(T, n_past, frames.device)
    idx = torch.arange(T - 1, device=frames.device) if model.cfg.skip_frame == "previous" else last
    H, W = frames.shape[-2:]
    ident = identity_coords(B * (T - 1), H, W, frames.device).view(B, T - 1, 2, H, W) if model.cfg.coords else None
    context = (frames[:, :-1], frames[:, 0], frames[:, last], frames[:, :-1], ident)
    arm = None
    if model.cfg.arm_progress:
        if arm_in is not None:
            u, kl_u, _ = model.arm_latents(h[:, :-1], arm_in[1], arm_in[2], arm_in[0], None, None, True)
            kl = torch.cat([kl, kl_u[..., None].to(kl.dtype)], -1)
            alpha = model.arm.factor(u)
        else:
            alpha = model.progress_factor(g, z[..., : model.cfg.z_dim])
        pose, _ = model.progress_pose(alpha, pose, 0, n_past)
        arm = pose[:, :, 1]
    pred, _ = model.decode(g, [s[:, idx] for s in skips], z, step_cond, context, pose)
    return RolloutOutput(pred=pred, kl=kl, arm=arm)


def build_model(cfg: ModelConfig) -> SVG:
    return SVG(cfg)
