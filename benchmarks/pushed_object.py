"""Where does a model put the object that the arm pushes? (synthetic data only)

For every test sequence of a synthetic dataset whose most-pushed object moves by at least
``--min-push`` px between the last observed frame (frame 1) and frame 11, the object's
colour centroid (the planner's own measure, ``vidpred.planning.cost.colour_centroid``, with
the object's fill colour from the world) is taken in the true frame 11 and in the model's
prior samples of it (2 -> 10 frames), read two ways as the planner's ``--cost`` can: from the
predicted frame 11 alone (``final``), and followed through the ten predicted frames
(``tracked``, ``vidpred.planning.cost.colour_track``). Printed for each: the distance of the
predicted position from the true one (mean over samples and sequences) against leaving the
object where it was last seen, how far the model moved it, and the share of the true push it
went along the true push's direction (median over sequences). This is what the planner's
cost reads, which the moving-region PSNR mixes with the arm.

    .venv/bin/python benchmarks/pushed_object.py RUN DATA_ROOT [--samples 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vidpred.data import open_split, synth
from vidpred.evaluation.evaluate import predict_samples
from vidpred.planning.cost import colour_centroid, colour_track
from vidpred.training.checkpoint import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("data_root", help="the synthetic dataset to score on (its seed and hidden causes from synth.json)")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--min-push", type=float, default=3.0, help="px (default: %(default)s)")
    args = ap.parse_args()
    if not args.min_push > 0:
        raise SystemExit(f"--min-push must be > 0 px, got {args.min_push}")
    info = synth.read_info(args.data_root)
    if info is None:
        raise SystemExit(f"{args.data_root}: not a synthetic dataset (no readable synth.json)")
    hidden = bool(info["params"].get("hidden_causes"))
    seed = int(info["params"]["seed"])
    model, _cfg, _ = load_model(args.run)
    ds = open_split(args.data_root, "test", window=12, random_start=False, use_cache=True)
    rows = []
    for i in range(len(ds)):
        frames, conds = ds[i]
        episode = synth.Episode(seed, "test", i, hidden=hidden)
        best = None
        for obj in episode.world.objects:
            colour = np.array(obj["colour"][:3], dtype=float) / 255.0
            last, end = colour_centroid(frames[1], colour), colour_centroid(frames[11], colour)
            if torch.isnan(last).any() or torch.isnan(end).any():
                continue  # hidden under the arm, or a colour the frame does not show
            push = float((end - last).norm())
            if best is None or push > best[0]:
                best = (push, colour, last, end)
        if best is None or best[0] < args.min_push:
            continue
        push, colour, last, end = best
        with torch.no_grad():
            pred = predict_samples(model, frames[None], conds[None], 2, [i], args.samples, 0)[0]
        row = [push]
        direction = (end - last) / push
        for xy in (colour_centroid(pred[:, -1], colour, prior_xy=last.tolist()),  # (samples, 2)
                   colour_track(pred, colour, last.tolist())):
            moved = xy - last
            row += [(xy - end).norm(dim=-1).mean().item(), moved.norm(dim=-1).mean().item(),
                    (moved @ direction).mean().item() / push]
        rows.append(row)
    if not rows:
        raise SystemExit(f"no test sequence of {args.data_root} pushes an object by {args.min_push} px or more")
    r = np.array(rows)
    print(f"{args.run}: {len(r)} test sequences with an object pushed >= {args.min_push} px (frames 1 -> 11); "
          f"true push {r[:, 0].mean():.2f} px (the distance of leaving the object in place)")
    for k, name in enumerate(("final", "tracked")):
        err, moved, along = r[:, 1 + 3 * k: 4 + 3 * k].T
        print(f"  {name:8s} predicted position {err.mean():.2f} px from the truth; the model moved it "
              f"{moved.mean():.2f} px, {np.median(along):.2f} of the true push along its direction (median)")


if __name__ == "__main__":
    main()
