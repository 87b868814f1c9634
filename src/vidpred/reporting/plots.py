"""Training curves and per-step evaluation plots (matplotlib, Agg backend: no display needed).

Curves come from each run's ``metrics.jsonl``: loss, MSE and KL from the step
lines, validation PSNR from the epoch lines; the KL weight beta and the
teacher-forcing ratio are drawn on a second y axis of every panel, so the
effect of a schedule can be read against the curve it drives. Several runs
share one figure, one colour per run (e.g. monotonic vs cyclical annealing).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from vidpred.errors import DataError  # noqa: E402

COLOURS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
PANELS = (("loss", "loss (MSE + beta KL)", "step"), ("mse", "MSE per frame", "step"),
          ("kl", "KL per frame (nats)", "step"), ("val_psnr", "validation PSNR (dB)", "epoch"))


def run_label(run: str | Path) -> str:
    run = Path(run)
    return run.name or str(run)


def _series(records: list[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if r.get("kind") == kind and r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_training(runs: list[str | Path], out: str | Path, labels: list[str] | None = None,
                  title: str | None = None) -> Path:
    """2 x 2 panels (loss, MSE, KL, validation PSNR) against the optimiser step for every run,
    with beta (dashed) and the teacher-forcing ratio (dotted) on each panel's right axis."""
    from vidpred.training.trainer import read_metrics

    if not runs:
        raise DataError("plot needs at least one run folder")
    labels = labels or [run_label(r) for r in runs]
    data = [read_metrics(Path(r)) for r in runs]
    for run, recs in zip(runs, data):
        if not any(r.get("kind") == "step" for r in recs):
            raise DataError(f"{Path(run) / 'metrics.jsonl'}: no training steps logged yet")
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True)
    for ax, (key, ylabel, kind) in zip(axes.flat, PANELS):
        right = ax.twinx()
        right.set_ylim(-0.03, 1.03)
        right.set_ylabel("beta / beta_max,  teacher forcing ratio", fontsize=8, color="0.35")
        right.tick_params(labelsize=8, colors="0.35")
        for i, (recs, label) in enumerate(zip(data, labels)):
            colour = COLOURS[i % len(COLOURS)]
            x, y = _series(recs, "epoch" if kind == "epoch" else "step", key)
            if x:
                ax.plot(x, y, color=colour, label=label, marker="o" if kind == "epoch" else None, ms=3, lw=1.4)
            xs, beta = _series(recs, "step", "beta")
            bmax = max(beta) if beta and max(beta) > 0 else 1.0
            right.plot(xs, [b / bmax for b in beta], color=colour, ls="--", lw=0.9, alpha=0.6)
            xs, tf = _series(recs, "step", "tf_ratio")
            right.plot(xs, tf, color=colour, ls=":", lw=1.1, alpha=0.8)
        if key in ("loss", "mse", "kl") and any(_series(r, "step", key)[1] for r in data):
            vals = [v for r in data for v in _series(r, "step", key)[1]]
            if min(vals) > 0:
                ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.set_zorder(right.get_zorder() + 1)  # curves above the schedules
        ax.patch.set_visible(False)
    for ax in axes[1]:
        ax.set_xlabel("optimiser step")
    handles, names = axes.flat[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="0.3", ls="--"), Line2D([], [], color="0.3", ls=":")]
    names += ["beta / beta_max (right axis)", "teacher forcing ratio (right axis)"]
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 4), frameon=False, fontsize=9)
    fig.suptitle(title or "training curves: " + " vs ".join(labels), fontsize=12)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _per_step(values: list) -> list[float]:
    """A JSON per-step list with None (a step without moving pixels) as NaN: a gap in the curve."""
    return [float("nan") if v is None else v for v in values]


def plot_eval_steps(results: list[dict], labels: list[str], out: str | Path) -> Path:
    """PSNR and SSIM per predicted step (mean over samples, best-of-N shaded) for every
    evaluation, and the copy-last-frame baseline of the first one (same sequences).
    Top row: whole frame; bottom row: the moving region (an evaluation written before
    those metrics is left out of that row)."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    panels = ((axes[0, 0], "psnr", "PSNR (dB)"), (axes[0, 1], "ssim", "SSIM"),
              (axes[1, 0], "psnr_moving", "PSNR, moving region (dB)"),
              (axes[1, 1], "ssim_moving", "SSIM, moving region"))
    for ax, m, name in panels:
        have = [(i, res, label) for i, (res, label) in enumerate(zip(results, labels)) if m in res["model"]]
        for i, res, label in have:
            colour = COLOURS[i % len(COLOURS)]
            steps = [res["n_past"] + k + 1 for k in range(res["n_future"])]
            s = res["model"][m]
            ax.plot(steps, _per_step(s["mean"]["per_step"]), color=colour, marker="o", ms=3,
                    label=f"{label} (mean of {res['n_samples']})")
            ax.fill_between(steps, _per_step(s["worst"]["per_step"]), _per_step(s["best"]["per_step"]),
                            color=colour, alpha=0.15)
        if have:
            res = have[0][1]
            steps = [res["n_past"] + k + 1 for k in range(res["n_future"])]
            ax.plot(steps, _per_step(res["copy_last"][m]["per_step"]), color="k", ls="--", label="copy last frame")
        else:
            ax.text(0.5, 0.5, "n/a: evaluation without moving-region metrics", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("frame")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # frames are whole numbers
    axes[0, 0].legend(fontsize=8)
    thresholds = sorted({res["motion_threshold"] for res in results if "motion_threshold" in res})
    moving = ""
    if thresholds:
        moving = f"; moving region: |truth - last observed| > {', '.join(f'{t:g}' for t in thresholds)}"
    fig.suptitle(f"per-step scores on the test split (band: worst to best sample){moving}", fontsize=11)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
