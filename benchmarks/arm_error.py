"""Where does a model put the arm? (models with ``model.arm_progress``)

For every test window (2 observed -> 10 predicted frames) the predicted arm positions are
compared with the recorded ones: squared distance in pixels of the 64 px frame (x and y),
summed over the 10 predicted frames. Printed per window and on average: dead reckoning (where
the commands put the arm, what a model without ``arm_progress`` draws), the posterior run
(the arm latent read from the true frames, the model's own frames fed back), and over
``--samples`` prior draws their mean and their best. Windows where dead reckoning is off
show an arm that stalled against, or slid around, an object too heavy to push.

    .venv/bin/python benchmarks/arm_error.py RUN DATA_ROOT [--samples 10] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vidpred.data import open_split
from vidpred.models.svg import ACTION_DIM, rollout
from vidpred.training.checkpoint import load_model
from vidpred.training.trainer import arm_sq_error_px2


def arm_error_px2(arm: torch.Tensor, recorded: torch.Tensor) -> torch.Tensor:
    """arm (N, F, 3), recorded (F, 3) in table fractions -> (N,) px^2 summed over frames."""
    return arm_sq_error_px2(arm, recorded).sum(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("data_root")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, cfg, _ = load_model(args.run)
    if not cfg.model.arm_progress:
        raise SystemExit(f"{args.run}: trained without model.arm_progress; its arm is where dead reckoning puts it")
    n_past, window = cfg.train.n_past, cfg.train.n_past + cfg.train.n_future
    ds = open_split(args.data_root, "test", window=window)
    g = torch.Generator().manual_seed(args.seed)
    S = args.samples
    rows = []
    print("window  reckoned  posterior  prior mean  prior best")
    with torch.no_grad():
        for i in range(len(ds)):
            frames, conds = (x[None] for x in ds[i])
            recorded = conds[0, n_past:, ACTION_DIM:]
            reckoned = model.embed_conditions(conds, n_past)[2][:, n_past - 1 :, 1]
            post = rollout(model, frames, conds, n_past, teacher_forcing=False, generator=g).arm[:, n_past - 1 :]
            noise = torch.randn(S, window - 1, cfg.model.noise_dim, generator=g)
            prior = rollout(model, frames.expand(S, *frames.shape[1:]), conds.expand(S, -1, -1), n_past,
                            use_posterior=False, noise=noise).arm[:, n_past - 1 :]
            e = arm_error_px2(prior, recorded)
            row = (arm_error_px2(reckoned, recorded).item(), arm_error_px2(post, recorded).item(),
                   e.mean().item(), e.min().item())
            rows.append(row)
            print(f"{i:6d} " + " ".join(f"{v:10.1f}" for v in row))
    mean = torch.tensor(rows).mean(0).tolist()
    print("mean   " + " ".join(f"{v:10.1f}" for v in mean))
    print(f"({len(rows)} windows, {S} prior draws each, px^2 summed over {window - n_past} frames)")


if __name__ == "__main__":
    main()
