"""What the pose maps cost in sampling: one rollout of N candidates, with and without them.

Loads a run trained with ``model.pose_map=true`` and times its sampling rollout
(``use_posterior=False``, 2 observed + 10 predicted frames, the planner's batch) with
the pose maps on and switched off (the same weights otherwise), interleaved:

    python benchmarks/bench_pose_map.py RUN [--batch 60] [--repeat 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vidpred.models.svg import rollout
from vidpred.training.checkpoint import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--batch", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, _ = load_model(args.run)
    if model.pose is None:
        raise SystemExit(f"{args.run}: trained without model.pose_map; nothing to compare")
    frames = torch.rand(args.batch, 2, 3, 64, 64)
    conds = torch.rand(args.batch, 12, 7) * 0.1

    def run() -> float:
        with torch.no_grad():
            rollout(model, frames, conds, 2, use_posterior=False, generator=torch.Generator().manual_seed(0))
            start = time.perf_counter()
            for _ in range(args.repeat):
                rollout(model, frames, conds, 2, use_posterior=False, generator=torch.Generator().manual_seed(0))
        return (time.perf_counter() - start) / args.repeat * 1000

    pose = model.pose
    for _ in range(2):
        model.pose = pose
        with_maps = run()
        model.pose = None
        without = run()
        print(f"rollout of {args.batch} (12 frames, {args.threads} threads): "
              f"{with_maps:.0f} ms with pose maps, {without:.0f} ms without")
    model.pose = pose


if __name__ == "__main__":
    main()
