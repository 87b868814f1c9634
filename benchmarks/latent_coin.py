"""Does the CVAE use its latent when the future is a coin flip? A check of the machinery.

Every sequence shows two grey frames, then a future that is all black or all white
(a fair coin per sequence): nothing in the past tells which. A model that uses z
reconstructs the future from the posterior (MSE near 0 where a model without z is stuck at
0.25, the error of predicting grey) and its prior samples split between black and white,
so the best of 5 samples is near 0 while the mean sample's error is near 0.5. A model
that ignores z predicts grey: all three stay at 0.25.

    .venv/bin/python benchmarks/latent_coin.py                      # the preset-like settings
    .venv/bin/python benchmarks/latent_coin.py --beta 0             # no KL weight
    .venv/bin/python benchmarks/latent_coin.py --free-bits 1        # 1 nat per step free
    .venv/bin/python benchmarks/latent_coin.py --g-dim 8 --z-dim 2 --rnn-size 16
    .venv/bin/python benchmarks/latent_coin.py --best-of 4          # plus the best-of-many term

Training: Adam (lr 2e-3), batch 16, 6 frames (2 -> 4), teacher forcing on every other step
(free running on the rest, as the presets mix them late in training), loss = per-step MSE
summed over steps + beta * KL (the trainer's own ``compute_loss``, free bits included; with
``--best-of K`` plus the trainer's ``best_of_many_loss`` over K prior runs of the batch's first 4
sequences, as ``train.best_of.samples=K``), the
pixel decoder, group norm, no condition. Every ``--every`` steps: posterior-run MSE on the future frames (free run, z
from the posterior), and the mean and best-of-5 MSE of prior samples, on 64 fresh sequences.
Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from vidpred.config import ModelConfig
from vidpred.models.svg import SVG, rollout
from vidpred.training.trainer import best_of_many_loss, compute_loss


def coin_batch(batch: int, frames: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.full((batch, frames, 3, 64, 64), 0.5)
    coin = (torch.rand(batch, generator=generator) < 0.5).float()
    x[:, 2:] = coin[:, None, None, None, None]
    return x, torch.zeros(batch, frames, 7)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=801)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--beta", type=float, default=1e-4)
    p.add_argument("--free-bits", type=float, default=0.0, help="nats per step and level (train.kl.free_bits)")
    p.add_argument("--delay", type=int, default=0, help="steps with beta 0, then a linear ramp to --beta")
    p.add_argument("--ramp", type=int, default=0, help="steps of that ramp (0: beta at once)")
    p.add_argument("--best-of", type=int, default=0, help="prior runs per sequence of the best-of-many term (0: off)")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--g-dim", type=int, default=16)
    p.add_argument("--z-dim", type=int, default=4)
    p.add_argument("--rnn-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed + 1)
    cfg = ModelConfig(width=a.width, g_dim=a.g_dim, z_dim=a.z_dim, rnn_size=a.rnn_size, cond_embed=0,
                      norm="group", predictor_layers=1)
    model = SVG(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    B, T = 16, 6
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {vars(a)}")
    t0 = time.perf_counter()
    for step in range(a.steps):
        x, c = coin_batch(B, T, gen)
        beta = 0.0 if step < a.delay else a.beta * min(1.0, (step - a.delay + 1) / max(a.ramp, 1))
        loss, _, kl, _ = compute_loss(model, x, c, 2, beta, step % 2 == 0,
                                      torch.randn(B, T - 1, cfg.noise_dim, generator=gen), nullcontext(),
                                      free_bits=a.free_bits)
        if a.best_of:
            loss = loss + best_of_many_loss(model, x[:4], c[:4], 2, a.best_of,
                                            torch.randn(4 * a.best_of, T - 1, cfg.noise_dim, generator=gen),
                                            nullcontext())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.every == 0:
            model.eval()
            with torch.no_grad():
                x, c = coin_batch(64, T, gen)
                post = rollout(model, x, c, 2, teacher_forcing=False,
                               noise=torch.randn(64, T - 1, cfg.noise_dim, generator=gen)).pred
                errs = torch.stack([
                    ((rollout(model, x[:, :2], c, 2, use_posterior=False,
                              noise=torch.randn(64, T - 1, cfg.noise_dim, generator=gen)).pred[:, 1:] - x[:, 2:]) ** 2)
                    .mean(dim=(1, 2, 3, 4)) for _ in range(5)])
            model.train()
            print(f"step {step:4d} {time.perf_counter() - t0:5.0f} s  KL {kl.item() * (T - 1):8.3f}  "
                  f"posterior MSE {((post[:, 1:] - x[:, 2:]) ** 2).mean().item():.4f}  prior: mean sample "
                  f"{errs.mean().item():.4f}, best of 5 {errs.min(0).values.mean().item():.4f}", flush=True)


if __name__ == "__main__":
    main()
