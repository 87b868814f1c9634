"""What a perfect model could score on a synthetic test split with hidden causes.

The *oracle sampler* is the simulator itself, given everything a model is given (the
first frames, the recorded actions) but not the hidden friction and mass: each of its
"samples" of a test sequence replays the recorded actions under another draw of the hidden
properties (``synth.replay(..., hidden_draw=d)``, d = 1..N; draw 0 is the recorded truth).
Its samples are exactly right wherever the hidden properties do not matter and
physically plausible where they do, so its scores bound what a stochastic video model
can reach on this data under the evaluation's statistics:

- ``mean sample``: the mean over samples of each sample's PSNR (what ``vidpred evaluate``
  reports as the model's score, and what the demo's targets are stated on);
- ``best of N``: per sequence, the sample with the highest moving-region PSNR (whole frame:
  whole-frame PSNR), as ``evaluate`` picks it; ``best of N - mean`` is the latent's gain;
- ``pixel mean``: the average of the N samples' frames, scored as one prediction (the
  blur that minimises the expected squared error, which a deterministic model tends to).

A frame that a sample gets exactly right scores PSNR's cap of 100 dB, and most frames
are exactly right (the hidden properties only matter once a push happens), so these
per-frame averages say little. The script also prints the *pooled* moving-region error:
the squared error summed over every moving pixel of every frame and sequence, divided by
their number, as a PSNR (``10 log10(1 / pooled MSE)``), for the oracle and for copy-last,
and how many sequences and frames the hidden draws change at all. The pooled error
of a model's samples can be compared with the oracle's: it is the part of the error
that no model can remove.

Scores use the evaluation's own functions (``vidpred.evaluation.metrics``: the moving
region is where the true frame differs from the last observed one by more than 0.1), on
the same windows (frames 0..11, 2 -> 10) and with the same averages (per step over
sequences, frames without moving pixels left out of the moving-region scores).

    .venv/bin/python benchmarks/oracle_sampler.py DATA_ROOT [--samples 10] [--run RUN ...]

With ``--run``, the pooled error of each run's prior samples (``vidpred evaluate``'s
samples: same noise, same windows) is printed beside the oracle's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from vidpred.data import open_split, synth
from vidpred.evaluation.evaluate import copy_last, predict_samples
from vidpred.evaluation.metrics import masked_psnr, motion_mask, psnr
from vidpred.training.checkpoint import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root", help="a synthetic dataset with hidden causes (vidpred data synth)")
    ap.add_argument("--samples", type=int, default=10, help="hidden-property draws per sequence (default: %(default)s)")
    ap.add_argument("--n-past", type=int, default=2)
    ap.add_argument("--n-future", type=int, default=10)
    ap.add_argument("--run", nargs="*", default=[], help="runs trained on DATA_ROOT to score the same way")
    args = ap.parse_args()
    info = synth.read_info(args.data_root)
    if info is None or not info["params"].get("hidden_causes"):
        raise SystemExit(f"{args.data_root}: not a synthetic dataset with hidden causes (synth.json)")
    if args.samples < 1:
        raise SystemExit(f"--samples must be >= 1, got {args.samples}")
    seed, P, T = int(info["params"]["seed"]), args.n_past, args.n_past + args.n_future
    ds = open_split(args.data_root, "test", window=T, random_start=False, use_cache=False)
    t0 = time.perf_counter()
    models = {r: load_model(Path(r))[0] for r in args.run}
    pooled = {k: [0.0, 0] for k in ("mean", "pixmean", "copy", *args.run)}  # summed squared error, moving pixels
    changed_seqs = changed_frames = frames_total = 0
    rows = {k: [] for k in ("psnr_mean", "psnr_best", "psnr_pixmean", "psnr_copy",
                            "mov_mean", "mov_best", "mov_pixmean", "mov_copy")}
    for i in range(len(ds)):
        frames, conds = ds[i]  # (T, 3, H, W) in [0, 1], (T, 7)
        actions = synth.scripted_actions(seed, "test", i, hidden=True)[:T]
        if not np.allclose(actions, conds[:, :4].numpy(), atol=1e-6):
            raise SystemExit(f"{args.data_root}: test sequence {i} does not replay (actions differ from the recording)")
        draws = [synth.replay(seed, "test", i, actions, hidden=True, hidden_draw=d)["frames"]
                 for d in range(1, args.samples + 1)]
        samples = torch.from_numpy(np.stack(draws)).permute(0, 1, 4, 2, 3).float() / 255.0  # (S, T, 3, H, W)
        truth = frames[P:].float()
        pred = samples[:, P:]
        if not torch.equal(samples[:, :P], frames[None, :P].expand_as(samples[:, :P])):
            raise SystemExit(f"test sequence {i}: a redrawn start differs from the recorded frames")
        base = copy_last(frames[None].float(), P)[0]  # (F, 3, H, W)
        mask = motion_mask(truth, base)  # (F, H, W)
        whole = psnr(pred, truth[None].expand_as(pred))  # (S, F)
        moving = masked_psnr(pred, truth[None].expand_as(pred), mask[None])  # (S, F), NaN where nothing moves
        pix = pred.mean(0)
        differs = (pred != truth[None]).flatten(2).any(-1)  # (S, F): a draw changed this frame
        changed_seqs += bool(differs.any())
        changed_frames += int(differs.any(0).sum())
        frames_total += differs.shape[1]
        err = lambda x: ((x - truth) ** 2).mean(-3)  # (..., F, H, W) per pixel, mean over channels  # noqa: E731
        errors = [("mean", err(pred).mean(0)), ("pixmean", err(pix)), ("copy", err(base))]
        for run, model in models.items():
            ours = predict_samples(model, frames[None], conds[None], P, [i], args.samples, 0)[0]  # (S, F, 3, H, W)
            errors.append((run, err(ours).mean(0)))
        for key, e in errors:
            pooled[key][0] += float(e[mask].sum())
            pooled[key][1] += int(mask.sum())
        rows["psnr_mean"].append(whole.mean(0))
        rows["psnr_best"].append(whole[whole.mean(1).argmax()])
        rows["psnr_pixmean"].append(psnr(pix, truth))
        rows["psnr_copy"].append(psnr(base, truth))
        rows["mov_mean"].append(moving.mean(0))
        rows["mov_best"].append(moving[moving.nanmean(1).nan_to_num(-1.0).argmax()])
        rows["mov_pixmean"].append(masked_psnr(pix, truth, mask))
        rows["mov_copy"].append(masked_psnr(base, truth, mask))
    cat = {k: torch.stack(v).double() for k, v in rows.items()}  # (N, F)
    avg = {k: float(v.nanmean()) for k, v in cat.items()}
    print(f"{args.data_root}: {len(ds)} test sequences x {args.samples} hidden-property draws, "
          f"{P} -> {args.n_future} frames ({time.perf_counter() - t0:.0f} s)")
    print(f"{'oracle sampler':24s} {'whole frame':>12s} {'moving region':>14s} {'moving margin':>14s}")
    for name, w, m in (("mean sample", "psnr_mean", "mov_mean"), (f"best of {args.samples}", "psnr_best", "mov_best"),
                       ("pixel mean of samples", "psnr_pixmean", "mov_pixmean"), ("copy-last", "psnr_copy", "mov_copy")):
        print(f"{name:24s} {avg[w]:10.2f} dB {avg[m]:11.2f} dB {avg[m] - avg['mov_copy']:+11.2f} dB")
    print(f"hidden draws change {changed_seqs} of {len(ds)} sequences, {changed_frames} of {frames_total} "
          f"future frames (any pixel)")
    for key, name in (("mean", "mean sample"), ("pixmean", "pixel mean of samples"), ("copy", "copy-last"),
                      *((r, f"run {r}") for r in args.run)):
        mse = pooled[key][0] / max(pooled[key][1], 1)
        print(f"pooled moving-region error, {name:22s}: MSE {mse:.5f} = {10 * np.log10(1 / max(mse, 1e-10)):6.2f} dB")
    print(f"best of {args.samples} - mean sample: {avg['psnr_best'] - avg['psnr_mean']:+.2f} dB whole, "
          f"{avg['mov_best'] - avg['mov_mean']:+.2f} dB moving")


if __name__ == "__main__":
    main()
