"""Evaluation protocol: n_past observed frames -> n_future predicted frames, scored per step.

For every sequence of a split (window starting at frame 0, the assignment's
"first 12 frames") the model draws ``samples`` futures from its prior and each
is scored against the ground truth with PSNR (``10 log10(1 / MSE)``, frames in
[0, 1]) and SSIM (Gaussian window 11, sigma 1.5), per predicted step.

Per metric and step we report, averaged over sequences:

* ``first``: the first sample (what a one-sample protocol, like the assignment's, scores);
* ``mean``: the average over the samples (the expected score of one sample, less noisy);
* ``best`` / ``worst``: per sequence the sample with the highest / lowest PSNR
  averaged over the future frames (SVG's best-of-N protocol); SSIM is reported
  for the same sample, so the two columns describe one prediction.

What the latent does (``latent`` in the JSON), from the same samples:

* ``best_of_n_gain_db``: best-of-N minus mean sample, whole frame and moving region
  (0 when the samples are all alike: the latent changes nothing);
* ``posterior``: the free run with z_t inferred by the posterior from the true
  frames (frames fed back are the model's own), scored like a sample, and its gain
  over the mean prior sample (what the latent *could* carry);
* ``diversity_moving``: mean absolute difference between two samples of a
  sequence on its moving pixels (all pairs; [0, 1] units);
* ``kl_per_frame``: KL(q || p) of that posterior run per predicted frame, in nats,
  per latent level (below ~1e-3 the posterior has collapsed onto the prior); with
  ``model.arm_latent`` the arm latent's follows the levels (``arm_latent``: true; against its
  mixture prior a one-sample estimate, log q(u) - log p(u) at the posterior's draw), and
  with ``model.seq_z`` the last entry is the sequence latent's KL shared out over the
  window's steps.

The copy-last-frame baseline (every future frame = the last observed one) is
scored on the same sequences. Noise is a pure function of
``(seed, sequence index, sample index)``, so results do not depend on the batch
size or on ``--max-sequences``.

Metrics that see motion (``psnr_moving``, ``ssim_moving``): the same scores on
the moving region of each future frame only, the pixels where the true frame
differs from the last observed one by more than ``motion_threshold`` in some
channel (:func:`~vidpred.evaluation.metrics.motion_mask`). The static table
dominates the whole-frame score; this one separates a model that moves the arm
from one that copies or blurs the last frame. The mask depends on the ground
truth only, so every sample and the baseline are scored on the same pixels.
A frame without a moving pixel has no score (NaN) and is left out:

* ``per_step``: the mean over the sequences whose frame at that step moves
  (``null`` in the JSON when none does);
* ``average``: the mean over every scored frame (sequence x step), so it is not
  the plain mean of ``per_step`` when steps have different numbers of scored
  frames (``null`` when no future frame moves at all);
* ``best`` / ``worst``: per sequence the sample with the highest / lowest
  moving-region PSNR averaged over its scored future frames (chosen separately
  from the whole-frame best / worst); ``ssim_moving`` is reported for that sample.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vidpred.errors import ConfigError
from vidpred.evaluation.metrics import MOTION_THRESHOLD, masked_psnr, motion_mask, psnr, ssim_scores

FORMAT = "vidpred-eval-1"  # the moving-region keys were added without a new format: readers must allow them missing
STATS = ("first", "mean", "best", "worst")
ROLLOUT_BATCH = 256  # most rollouts evaluated in one batch (sequences x samples)
POSTERIOR_NOISE = -1 % 2**31  # the sample key of the posterior runs' noise (prior samples are 0, 1, ...)
METRICS = ("psnr", "ssim")
MOVING_METRICS = ("psnr_moving", "ssim_moving")  # on the moving region only (see the module docstring)
RANK_BY = {"psnr": "psnr", "ssim": "psnr", "psnr_moving": "psnr_moving", "ssim_moving": "psnr_moving"}  # best/worst
BEST_OF = ("per sequence, the sample with the highest (worst: lowest) mean PSNR over the future frames; "
           "for psnr_moving / ssim_moving, the sample with the highest (worst: lowest) moving-region PSNR "
           "averaged over the future frames that have moving pixels")


def sample_noise(seed: int, index: int, sample: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise for one (sequence, sample), a pure function of its arguments."""
    key = int(np.random.default_rng([seed, index, sample, 0xE7A1]).integers(2**62))
    return torch.randn(shape, generator=torch.Generator().manual_seed(key))


def copy_last(frames: torch.Tensor, n_past: int) -> torch.Tensor:
    """frames (B, T, 3, H, W) -> the baseline's future (B, T - n_past, 3, H, W): the last observed frame repeated."""
    B, T = frames.shape[:2]
    return frames[:, n_past - 1 : n_past].expand(B, T - n_past, *frames.shape[2:])


def resolve_horizon(cfg, n_past: int | None, n_future: int | None) -> tuple[int, int]:
    """Defaults from the run's config; checked against the 30-step sequences."""
    from vidpred.data import SEQ_LEN

    n_past = cfg.train.n_past if n_past is None else int(n_past)
    n_future = cfg.train.n_future if n_future is None else int(n_future)
    if n_past < 1 or n_future < 1:
        raise ConfigError(f"--n-past and --n-future must be >= 1, got {n_past} and {n_future}")
    if n_past + n_future > SEQ_LEN:
        raise ConfigError(f"--n-past + --n-future must be <= {SEQ_LEN} (sequence length), got {n_past + n_future}")
    return n_past, n_future


@torch.no_grad()
def predict_samples(model, frames, conds, n_past: int, indices, samples: int, seed: int,
                    rollout_fn=None) -> torch.Tensor:
    """Prior samples of the future: frames (B, T, 3, H, W) (only the first n_past are read),
    conds (B, T, 7), indices (B,) dataset indices that key the noise; ``model`` in eval mode;
    ``rollout_fn`` the rollout to call (default :func:`vidpred.models.svg.rollout`; ``--compile``
    passes it through ``torch.compile``). Returns (B, samples, T - n_past, 3, H, W)."""
    B, T = conds.shape[:2]
    device = next(model.parameters()).device
    shape = (T - 1, model.cfg.noise_dim)
    # Samples run as one batch of B * S rollouts (in chunks of at most ROLLOUT_BATCH), not one
    # rollout per sample: the model is in eval mode, so rows do not interact.
    per_chunk = max(1, ROLLOUT_BATCH // B)
    out = []
    for s0 in range(0, samples, per_chunk):
        S = min(per_chunk, samples - s0)
        noise = torch.stack([sample_noise(seed, int(i), s, shape) for i in indices for s in range(s0, s0 + S)])
        r = (rollout_fn or _rollout)(model, frames[:, :n_past].repeat_interleave(S, 0), conds.repeat_interleave(S, 0), n_past,
                     use_posterior=False, noise=noise.to(device))
        future = r.pred[:, n_past - 1 :].float().clamp(0, 1)  # (B*S, F, 3, H, W), rows b-major
        out.append(future.view(B, S, *future.shape[1:]))
    return torch.cat(out, 1)


def _rollout(model, *args, **kwargs):
    from vidpred.models.svg import rollout

    return rollout(model, *args, **kwargs)


def check_motion_threshold(threshold: float) -> float:
    """The moving-region threshold, checked: frames are in [0, 1], so it must lie strictly between 0 and 1."""
    threshold = float(threshold)
    if not 0.0 < threshold < 1.0:  # also rejects NaN
        raise ConfigError(f"--motion-threshold must be > 0 and < 1 (frames are in [0, 1]), got {threshold}")
    return threshold


def _number(x: float, digits: int = 6) -> float | None:
    """A JSON-safe rounded number: None (JSON null) for NaN, i.e. nothing to average."""
    x = float(x)
    return round(x, digits) if np.isfinite(x) else None


def _pick(v: torch.Tensor, order: torch.Tensor) -> dict[str, torch.Tensor]:
    """v (B, S, F) scores of S samples; order (B, S) the per-sample ranking score.
    Returns the four statistics, each (B, F)."""
    rows = torch.arange(v.shape[0])
    return {"first": v[:, 0], "mean": v.mean(1), "best": v[rows, order.argmax(1)], "worst": v[rows, order.argmin(1)]}


def evaluate(model, dataset, n_past: int, samples: int = 5, seed: int = 0, batch_size: int = 16,
             max_sequences: int | None = None, progress: bool | None = None,
             motion_threshold: float = MOTION_THRESHOLD, compile: bool = False) -> dict[str, Any]:
    """Score ``model`` on ``dataset`` (windows of n_past + n_future frames from step 0).

    ``compile``: draw the prior samples through ``torch.compile`` (one warning line and the
    eager path where it cannot compile).

    Returns a dict with per-step arrays and averages (see the module docstring);
    ``evaluate_run`` adds the run's provenance around it.
    """
    if samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {samples}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    motion_threshold = check_motion_threshold(motion_threshold)
    n = len(dataset) if max_sequences is None else min(len(dataset), int(max_sequences))
    if n < 1:
        raise ConfigError(f"--max-sequences must be >= 1, got {max_sequences}")
    device = next(model.parameters()).device
    from vidpred.models.svg import rollout
    from vidpred.runtime import CompiledOrEager

    sample_fn = CompiledOrEager(rollout, compile, device, "evaluate")
    per_seq: dict[str, list[torch.Tensor]] = {f"{m}_{k}": [] for m in METRICS + MOVING_METRICS for k in STATS}
    per_seq.update({f"{m}_copy": [] for m in METRICS + MOVING_METRICS}, moving=[])
    per_seq.update({f"{m}_posterior": [] for m in METRICS + MOVING_METRICS}, diversity=[], kl=[])
    names = []
    # progress None: a bar when stderr is a terminal (tqdm's own rule)
    bar = tqdm(total=n * samples, desc="evaluate", unit="sample", file=sys.stderr, dynamic_ncols=True,
               disable=None if progress is None else not progress)
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        items = [dataset[i] for i in idx]
        frames = torch.stack([f for f, _ in items]).to(device)  # (B, T, 3, H, W)
        conds = torch.stack([c for _, c in items]).to(device)  # (B, T, 7)
        truth = frames[:, n_past:].float()
        pred = predict_samples(model, frames, conds, n_past, idx, samples, seed, sample_fn)  # (B, S, F, 3, H, W)
        target = truth.unsqueeze(1)  # (B, 1, F, 3, H, W): broadcast against the samples
        base = copy_last(frames.float(), n_past)  # (B, F, 3, H, W)
        mask = motion_mask(truth, base, motion_threshold)  # (B, F, H, W): the truth's moving pixels
        scores = {"psnr": psnr(pred, target),  # (B, S, F) each
                  "psnr_moving": masked_psnr(pred, target, mask.unsqueeze(1))}  # NaN where nothing moves
        scores["ssim"], scores["ssim_moving"] = ssim_scores(pred, target, mask.unsqueeze(1))
        scores = {m: v.cpu() for m, v in scores.items()}
        # best / worst by PSNR over the future frames: whole-frame PSNR for the whole-frame metrics,
        # moving-region PSNR (over the frames that move) for the moving-region ones. The mask is the
        # same for every sample, so a sequence's ranking scores are all finite or all NaN (then any pick is NaN).
        order = {"psnr": scores["psnr"].mean(-1), "psnr_moving": scores["psnr_moving"].nanmean(-1)}  # (B, S)
        for m, v in scores.items():
            for k, x in _pick(v, order[RANK_BY[m]]).items():
                per_seq[f"{m}_{k}"].append(x)
        per_seq["psnr_copy"].append(psnr(base, truth).cpu())
        per_seq["psnr_moving_copy"].append(masked_psnr(base, truth, mask).cpu())
        for k, v in zip(("ssim_copy", "ssim_moving_copy"), ssim_scores(base, truth, mask)):
            per_seq[k].append(v.cpu())
        per_seq["moving"].append(mask.float().mean(dim=(-2, -1)).cpu())  # (B, F) fraction of moving pixels
        post, kl = posterior_run(model, frames, conds, n_past, idx, seed)  # (B, F, 3, H, W), (B, F, KL columns)
        per_seq["psnr_posterior"].append(psnr(post, truth).cpu())
        per_seq["psnr_moving_posterior"].append(masked_psnr(post, truth, mask).cpu())
        for k, v in zip(("ssim_posterior", "ssim_moving_posterior"), ssim_scores(post, truth, mask)):
            per_seq[k].append(v.cpu())
        per_seq["kl"].append(kl.cpu())
        per_seq["diversity"].append(moving_diversity(pred, mask).cpu())
        names += [dataset.sequence_name(i) for i in idx]
        bar.update(len(idx) * samples)
    bar.close()
    cat = {k: torch.cat(v).double() for k, v in per_seq.items()}  # (N, F)

    def summary(t: torch.Tensor) -> dict:
        return {"per_step": [round(float(x), 6) for x in t.mean(0)], "average": round(float(t.mean()), 6)}

    def moving_summary(t: torch.Tensor) -> dict:
        # nan-aware: frames without moving pixels (NaN) are left out; a step (or a whole
        # evaluation) without any is None, i.e. null in the JSON
        return {"per_step": [_number(x) for x in t.nanmean(0)], "average": _number(t.nanmean())}

    result: dict[str, Any] = {"model": {}, "copy_last": {}}
    for m in METRICS + MOVING_METRICS:
        stat = moving_summary if m in MOVING_METRICS else summary
        result["model"][m] = {k: stat(cat[f"{m}_{k}"]) for k in STATS}
        result["copy_last"][m] = stat(cat[f"{m}_copy"])
    mean_psnr = result["model"]["psnr"]["mean"]["average"]
    result["psnr_margin_db"] = round(mean_psnr - result["copy_last"]["psnr"]["average"], 6)
    # the model and the baseline are scored on the same moving pixels, so the difference is fair
    mean_moving = result["model"]["psnr_moving"]["mean"]["average"]
    base_moving = result["copy_last"]["psnr_moving"]["average"]
    result["psnr_moving_margin_db"] = None if mean_moving is None else round(mean_moving - base_moving, 6)
    result["motion_threshold"] = motion_threshold
    result["moving_fraction"] = _number(cat["moving"].mean())  # of all future pixels of all sequences
    result["moving_fraction_per_step"] = [_number(x) for x in cat["moving"].mean(0)]
    result["frames_without_motion"] = int((cat["moving"] == 0).sum())  # left out of the moving-region scores
    result["per_sequence"] = [
        {"name": name, "psnr_first": round(float(cat["psnr_first"][i].mean()), 4),
         "psnr_mean": round(float(cat["psnr_mean"][i].mean()), 4),
         "psnr_best": round(float(cat["psnr_best"][i].mean()), 4),
         "psnr_copy_last": round(float(cat["psnr_copy"][i].mean()), 4),
         "psnr_moving_mean": _number(cat["psnr_moving_mean"][i].nanmean(), 4),
         "psnr_moving_copy_last": _number(cat["psnr_moving_copy"][i].nanmean(), 4),
         "moving_fraction": _number(cat["moving"][i].mean(), 6)}
        for i, name in enumerate(names)
    ]
    result["latent"] = latent_summary(cat, result, samples, sequence_latent=model.cfg.seq_z > 0,
                                      arm_latent=model.cfg.arm_latent)
    result["n_sequences"] = n
    return result


@torch.no_grad()
def posterior_run(model, frames, conds, n_past: int, indices, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The free run with z from the posterior (latents inferred from the true frames, the
    model's own frames fed back). Returns its future (B, F, 3, H, W) and the KL per future
    step and level (B, F, KL columns: the levels, then the arm's and the sequence latent's if
    the model has them)."""
    T = conds.shape[1]
    shape = (T - 1, model.cfg.noise_dim)
    noise = torch.stack([sample_noise(seed, int(i), POSTERIOR_NOISE, shape) for i in indices])
    r = _rollout(model, frames, conds, n_past, use_posterior=True, teacher_forcing=False,
                 noise=noise.to(frames.device))
    return r.pred[:, n_past - 1 :].float().clamp(0, 1), r.kl[:, n_past - 1 :].float()


def moving_diversity(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """pred (B, S, F, 3, H, W) samples, mask (B, F, H, W) moving pixels -> (B,) the mean
    absolute difference between two samples over the moving pixels, averaged over all
    pairs (NaN with one sample or no moving pixel)."""
    B, S = pred.shape[:2]
    if S < 2:
        return torch.full((B,), float("nan"))
    m = mask.unsqueeze(2).float()  # (B, F, 1, H, W)
    pixels = (m.sum(dim=(1, 2, 3, 4)) * pred.shape[3]).clamp(min=1)  # moving values per sample
    total = torch.zeros(B, device=pred.device)
    for i in range(S):
        for j in range(i + 1, S):
            total += ((pred[:, i] - pred[:, j]).abs() * m).sum(dim=(1, 2, 3, 4)) / pixels
    out = total / (S * (S - 1) / 2)
    return torch.where(mask.flatten(1).any(1), out, torch.full_like(out, float("nan")))


def latent_summary(cat: dict[str, torch.Tensor], result: dict, samples: int,
                   sequence_latent: bool = False, arm_latent: bool = False) -> dict[str, Any]:
    """The ``latent`` block of an evaluation (see the module docstring); ``sequence_latent``:
    the last KL level is ``model.seq_z``'s; ``arm_latent``: the one after the levels is
    ``model.arm_latent``'s."""
    model = result["model"]

    def gain(a, b):
        return None if a is None or b is None else round(a - b, 6)

    posterior = {m: (_number(cat[f"{m}_posterior"].nanmean()) if m in MOVING_METRICS
                     else round(float(cat[f"{m}_posterior"].mean()), 6)) for m in METRICS + MOVING_METRICS}
    kl = cat["kl"]  # (N, F, levels)
    return {
        "samples": samples,
        "best_of_n_gain_db": {m: gain(model[m]["best"]["average"], model[m]["mean"]["average"])
                              for m in ("psnr", "psnr_moving")},
        "posterior": posterior,
        "posterior_gain_db": {m: gain(posterior[m], model[m]["mean"]["average"]) for m in ("psnr", "psnr_moving")},
        "diversity_moving": _number(cat["diversity"].nanmean()),
        "kl_per_frame": [round(float(x), 6) for x in kl.mean(dim=(0, 1))],
        "kl_per_frame_per_step": [round(float(x), 6) for x in kl.sum(-1).mean(0)],
        "sequence_latent": sequence_latent,
        "arm_latent": arm_latent,
    }


def evaluate_run(run: str | Path, split: str = "test", samples: int = 5, seed: int = 0,
                 n_past: int | None = None, n_future: int | None = None, batch_size: int = 16,
                 max_sequences: int | None = None, device: str = "auto", data_root: str | None = None,
                 progress: bool | None = None, motion_threshold: float = MOTION_THRESHOLD,
                 compile: bool = False) -> dict[str, Any]:
    """Load a run (folder or .pt) and evaluate it on ``split`` of its dataset (or ``data_root``)."""
    from vidpred.data import open_split
    from vidpred.training.checkpoint import load_model
    from vidpred.training.trainer import resolve_device

    motion_threshold = check_motion_threshold(motion_threshold)  # a bad flag fails before the model loads

    dev = resolve_device(device)
    model, cfg, ckpt_path = load_model(Path(run), device=dev)
    n_past, n_future = resolve_horizon(cfg, n_past, n_future)
    root = data_root or cfg.data.root
    ds = open_split(root, split, window=n_past + n_future, random_start=False, use_cache=cfg.data.use_cache)
    result = evaluate(model, ds, n_past, samples=samples, seed=seed, batch_size=batch_size,
                      max_sequences=max_sequences, progress=progress, motion_threshold=motion_threshold,
                      compile=compile)
    head = {
        "format": FORMAT,
        "run": str(run),
        "checkpoint": str(ckpt_path),
        "data_root": str(root),
        "split": split,
        "n_past": n_past,
        "n_future": n_future,
        "n_sequences": result.pop("n_sequences"),
        "n_samples": samples,
        "seed": seed,
        "best_of": BEST_OF,
    }
    return {**head, **result}


def default_output(run: str | Path, split: str) -> Path:
    run = Path(run)
    folder = run.parent if run.is_file() else run
    return folder / f"eval_{split}.json"


def write_json(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def read_json(path: str | Path) -> dict:
    from vidpred.data.layout import read_json as read_json_file
    from vidpred.errors import DataError

    path = Path(path)
    result = read_json_file(path, "evaluation file")
    if not isinstance(result, dict) or result.get("format") != FORMAT:
        raise DataError(f"{path}: not a vidpred evaluation (expected format {FORMAT})")
    return result


def _cell(fmt: str, value: float | None) -> str:
    """One number of the table; n/a for a missing one (a step without moving pixels)."""
    return fmt.format(value) if value is not None else f"{'n/a':>{len(fmt.format(0.0))}s}"


def format_table(result: dict) -> str:
    """A fixed-width table: one row per statistic, one column per predicted step, and the average.

    Whole-frame PSNR and SSIM, then the same on the moving region; an evaluation
    written before the moving-region metrics existed says n/a for them.
    """
    n_past, F = result["n_past"], result["n_future"]
    steps = [f"t={n_past + k + 1}" for k in range(F)]  # 1-based frame numbers, as in the assignment's figures
    head = f"{'':18s}" + "".join(f"{s:>7s}" for s in steps) + f"{'avg':>8s}"
    has_moving = all(m in result["model"] for m in MOVING_METRICS)
    if has_moving:
        fraction = result.get("moving_fraction")
        moving = (f"moving region: pixels whose true value differs from the last observed frame by more than "
                  f"{result['motion_threshold']:g} (some channel); "
                  + (f"{100 * fraction:.1f}% of the future pixels" if fraction is not None else "n/a"))
    else:
        moving = "moving region: n/a (evaluation written before the moving-region metrics)"
    lines = [
        f"{result['split']} split of {result['data_root']}: {result['n_sequences']} sequences x "
        f"{result['n_samples']} samples, {n_past} -> {F} frames, seed {result['seed']}",
        f"checkpoint {result['checkpoint']}",
        moving,
    ]
    sections = [("psnr", "PSNR (dB)", "{:7.2f}"), ("ssim", "SSIM", "{:7.3f}")]
    if has_moving:
        sections += [("psnr_moving", "PSNR moving region (dB)", "{:7.2f}"),
                     ("ssim_moving", "SSIM moving region", "{:7.3f}")]
    for m, title, fmt in sections:
        lines += ["", title, head]
        rows = [(k, result["model"][m][k]) for k in STATS] + [("copy-last", result["copy_last"][m])]
        for name, s in rows:
            lines.append(f"  {name:16s}" + "".join(_cell(fmt, v) for v in s["per_step"])
                         + " " + _cell(fmt, s["average"]))
    lines += ["", f"mean-sample PSNR minus copy-last: {result['psnr_margin_db']:+.2f} dB"]
    margin = result.get("psnr_moving_margin_db")
    lines.append("mean-sample PSNR minus copy-last, moving region: "
                 + (f"{margin:+.2f} dB" if margin is not None else "n/a"))
    lines += format_latent(result.get("latent"))
    return "\n".join(lines)


def format_latent(latent: dict | None) -> list[str]:
    """The console lines of the ``latent`` block (none for an evaluation written before it)."""
    if not latent:
        return []
    f = lambda v, fmt="{:+.2f}": "n/a" if v is None else fmt.format(v)  # noqa: E731
    best, post = latent["best_of_n_gain_db"], latent["posterior_gain_db"]
    kl = ", ".join(f"{v:.3g}" for v in latent["kl_per_frame"])
    extra = [name for key, name in (("arm_latent", "the arm's latent"), ("sequence_latent", "the sequence latent"))
             if latent.get(key, False)]
    extra = f" (the last{' two' if len(extra) == 2 else ''}: {' and '.join(extra)})" if extra else ""
    return ["", "latent",
            f"  best of {latent['samples']} minus mean sample: {f(best['psnr'])} dB whole frame, "
            f"{f(best['psnr_moving'])} dB moving region",
            f"  posterior (z inferred from the true future) minus mean sample: {f(post['psnr'])} dB whole frame, "
            f"{f(post['psnr_moving'])} dB moving region",
            f"  sample diversity on the moving pixels: {f(latent['diversity_moving'], '{:.4f}')} "
            f"(mean |difference| between two samples)",
            f"  KL(q || p) per predicted frame, per level{extra}: {kl} nats"]


@torch.no_grad()
def predict_sequence(model, frames: torch.Tensor, conds: torch.Tensor, n_past: int, index: int,
                     samples: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Everything the pictures of one sequence need.

    frames (T, 3, H, W), conds (T, 7) of one window. Returns, on the CPU:
    ``truth`` (T, 3, H, W); ``posterior`` (T - 1, 3, H, W), the reconstruction of
    frames 1..T-1 with z from q(z_t | x_{1:t}) and ground-truth inputs; ``samples``
    (samples, T - 1, 3, H, W), prior samples of frames 1..T-1 (frames before
    n_past come from the posterior warm-up, the rest are predicted). Sample noise
    is keyed like :func:`evaluate`'s, so sample 0 here is sample 0 there.
    """
    device = next(model.parameters()).device
    x, c = frames.unsqueeze(0).to(device), conds.unsqueeze(0).to(device)
    T = c.shape[1]
    shape = (T - 1, model.cfg.noise_dim)
    post = _rollout(model, x, c, n_past, use_posterior=True, teacher_forcing=True,
                    noise=sample_noise(seed, index, POSTERIOR_NOISE, shape).unsqueeze(0).to(device))
    outs = []
    for s in range(samples):
        noise = sample_noise(seed, index, s, shape).unsqueeze(0).to(device)
        outs.append(_rollout(model, x[:, :n_past], c, n_past, use_posterior=False, noise=noise).pred[0])
    return {
        "truth": frames.float().cpu(),
        "posterior": post.pred[0].float().clamp(0, 1).cpu(),
        "samples": torch.stack(outs).float().clamp(0, 1).cpu(),
    }


def read_actions(path: str | Path, conds: torch.Tensor, n_past: int = 0, action_lag: int = 0) -> torch.Tensor:
    """Replace the conditions of a window (T, 7) by a what-if CSV (comma-separated, no header).

    Row t of the file is step t of the window. 4 columns replace the actions; 7 columns
    replace the actions and the end-effector positions, like the dataset's two files side
    by side. With ``n_past`` observed frames, only what concerns the predicted frames is
    replaced: actions from row ``n_past - action_lag`` (frame t follows action
    t - action_lag; the observed frames were made by the recorded ones) and positions from
    row ``n_past``. The file still needs T rows.
    """
    from vidpred.data import read_condition_csv
    from vidpred.data.layout import ACTION_DIM, COND_DIM
    from vidpred.errors import DataError

    path = Path(path)
    try:
        first = next((ln for ln in path.read_text().splitlines() if ln.strip()), "")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read as text ({type(err).__name__})") from None
    n_cols = first.count(",") + 1 if first else 0
    if n_cols not in (ACTION_DIM, COND_DIM):
        raise DataError(f"{path}: expected {ACTION_DIM} columns (actions) or {COND_DIM} (actions and "
                        f"end-effector positions), got {n_cols}")
    table = torch.from_numpy(read_condition_csv(path, n_cols))
    T = conds.shape[0]
    if table.shape[0] < T:
        raise DataError(f"{path}: expected at least {T} rows (one per step of the window), got {table.shape[0]}")
    out = conds.clone()
    first = max(0, n_past - action_lag)
    out[first:, :ACTION_DIM] = table[first:T, :ACTION_DIM]
    if n_cols == COND_DIM:  # positions of observed frames are facts: only future ones are replaced
        out[n_past:, ACTION_DIM:] = table[n_past:T, ACTION_DIM:]
    return out


def simulated_whatif(root: str | Path, split: str, name: str, conds: torch.Tensor, n_past: int) -> torch.Tensor | None:
    """The true future of a what-if in the synthetic world: the sequence ``name`` re-simulated
    with its recorded actions for the observed frames and the what-if ones after (action t
    produces frame t there). Returns frames (T, 3, H, W) in [0, 1], or None for data the
    simulator did not make (BAIR)."""
    from vidpred.data import synth

    from vidpred.errors import ConfigError, DataError

    info = synth.read_info(root)
    if info is None:
        return None
    try:  # <traj>/<k> with traj = traj_<a>_to_<b>: sequence a + k of the split
        traj, k = name.rsplit("/", 1)
        index = int(traj.split("_")[1]) + int(k)
    except (ValueError, IndexError):
        raise DataError(f"{root}/{split}: sequence name {name!r} is not traj_<a>_to_<b>/<k>, so the simulator "
                        f"cannot re-run it") from None
    params = info["params"]
    if not isinstance(params.get("seed"), int):
        raise DataError(f"{Path(root) / synth.SYNTH_INFO}: params.seed must be an integer, got {params.get('seed')!r}")
    hidden = bool(params.get("hidden_causes", False))
    try:  # the scripted arm's strikes draw from the start's stream: the same release, the same start
        release = synth.check_release(params.get("release", 0.0))
    except ConfigError as err:
        raise DataError(f"{Path(root) / synth.SYNTH_INFO}: params.{err}") from None
    recorded = synth.scripted_actions(params["seed"], split, index, hidden, release=release)
    T = conds.shape[0]
    actions = np.concatenate([recorded[:n_past], conds[n_past:, :4].double().numpy()])
    frames = synth.replay(params["seed"], split, index, actions[:T], hidden=hidden, release=release)["frames"]
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


def predict_run(run: str | Path, split: str = "test", index: int = 0, samples: int = 3, seed: int = 0,
                n_past: int | None = None, n_future: int | None = None, actions: str | Path | None = None,
                device: str = "auto", data_root: str | None = None) -> dict[str, Any]:
    """Load a run and predict one sequence (see :func:`predict_sequence`).

    Returns its tensors plus ``name``, ``n_past``, ``index``, ``split``, ``actions`` (the
    what-if file, or None) and ``truth_source``: ``recorded``; for a what-if ``simulator``
    (the synthetic world re-simulated under the what-if actions: ``truth`` is its true
    future) or ``none`` (other data: the recorded future is not the what-if's, so ``truth``
    keeps the observed frames and its future frames are NaN, and so is the posterior
    reconstruction, which would need them).
    """
    from vidpred.data import open_split
    from vidpred.errors import DataError
    from vidpred.training.checkpoint import load_model
    from vidpred.training.trainer import resolve_device

    if samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {samples}")
    model, cfg, ckpt_path = load_model(Path(run), device=resolve_device(device))
    n_past, n_future = resolve_horizon(cfg, n_past, n_future)
    root = data_root or cfg.data.root
    ds = open_split(root, split, window=n_past + n_future, random_start=False, use_cache=cfg.data.use_cache)
    if not 0 <= index < len(ds):
        raise DataError(f"--index {index} out of range: the {split} split of {root} has {len(ds)} sequences "
                        f"(0..{len(ds) - 1})")
    frames, conds = ds[index]
    name = ds.sequence_name(index)
    source = "recorded"
    if actions is not None:
        # which rows made the observed frames is the data's convention: synth.json's where it has one
        from vidpred.data.synth import ACTION_LAG, read_info

        info = read_info(root)
        lag = cfg.model.action_lag if info is None else int(info.get("action_lag", ACTION_LAG))
        conds = read_actions(actions, conds, n_past, lag)
    if actions is not None:
        simulated = simulated_whatif(root, split, name, conds, n_past)
        if simulated is not None:  # its observed frames are the recorded ones: the posterior reads its future
            frames, source = simulated, "simulator"
        else:
            source = "none"
    out = predict_sequence(model, frames, conds, n_past, index, samples=samples, seed=seed)
    if source == "none":  # no true future: nothing to show, nothing for the posterior to read
        out["truth"][n_past:] = float("nan")
        out["posterior"][:] = float("nan")
    out.update(name=name, n_past=n_past, index=index, split=split, checkpoint=str(ckpt_path),
               actions=None if actions is None else str(actions), truth_source=source)
    return out
