"""A static, self-contained HTML report comparing runs side by side.

``build_report(runs, out)`` writes ``out/index.html`` and every picture it shows
under ``out/`` (relative links, so the folder can be copied or zipped):

* evaluation table (runs as columns) and per-step PSNR/SSIM plot, whole frame and
  moving region, read from each run's ``eval_<split>.json`` (computed first when
  missing or older than the checkpoint; an older file without the moving-region
  numbers shows n/a for them);
* training curves of all runs on one figure (beta and teacher forcing on a second axis);
* planning success per arm, for runs with a ``plan.json`` (``vidpred plan``);
* per run, the GIF and the per-step grid of one test sequence;
* the configs: the keys that differ between runs, then each ``config.yaml`` in full.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import shutil
from pathlib import Path

import yaml

from vidpred.config import flatten
from vidpred.data.layout import read_json
from vidpred.errors import DataError

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1400px; color: #222; padding: 0 16px; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 2em; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
.side { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.side > div { flex: 1 1 0; min-width: 320px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 8px; font-size: 0.8em; overflow-x: auto; }
.good { color: #1a7f37; font-weight: 600; } .bad { color: #c62828; font-weight: 600; }
.note { color: #666; font-size: 0.9em; }
"""


def _labels(runs: list[Path]) -> list[str]:
    """Short unique names for the runs (folder names, numbered when they clash)."""
    names = [r.resolve().name for r in runs]
    out = []
    for i, n in enumerate(names):
        out.append(n if names.count(n) == 1 else f"{n}-{i + 1}")
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def checkpoint_mtime(run: Path) -> float:
    return max((p.stat().st_mtime for p in (run / "best.pt", run / "last.pt") if p.is_file()), default=0.0)


def ensure_evaluation(run: Path, split: str, evaluate: bool, eval_kwargs: dict) -> dict | None:
    """The run's ``eval_<split>.json``; computed (and written) when missing or older than
    the checkpoint, unless ``evaluate`` is False (then None when missing)."""
    from vidpred.evaluation.evaluate import default_output, evaluate_run, read_json, write_json

    path = default_output(run, split)
    fresh = path.is_file() and path.stat().st_mtime >= checkpoint_mtime(run)
    if fresh or (path.is_file() and not evaluate):
        return read_json(path)
    if not evaluate:
        return None
    result = evaluate_run(run, split=split, **eval_kwargs)
    write_json(result, path)
    return result


def build_report(runs: list[str | Path], out: str | Path, split: str = "test", index: int = 0,
                 evaluate: bool = True, samples: int = 5, seed: int = 0, max_sequences: int | None = None,
                 device: str = "auto", grid_samples: int = 3, progress: bool | None = None,
                 title: str = "vidpred report") -> Path:
    """Write ``out/index.html`` for ``runs``; returns its path."""
    from vidpred.evaluation.evaluate import predict_run
    from vidpred.reporting.media import write_prediction
    from vidpred.reporting.plots import plot_eval_steps, plot_training
    from vidpred.training.trainer import read_metrics

    runs = [Path(r) for r in runs]
    if not runs:
        raise DataError("report needs at least one run folder")
    for r in runs:
        if not r.is_dir():
            raise DataError(f"run folder {r} not found")
        if not (r / "config.yaml").is_file():
            raise DataError(f"{r / 'config.yaml'} not found: is {r} a vidpred run folder?")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = _labels(runs)
    configs = [yaml.safe_load((r / "config.yaml").read_text()) for r in runs]

    curves = plot_training(runs, out / "curves.png", labels=labels)
    eval_kwargs = dict(samples=samples, seed=seed, max_sequences=max_sequences, device=device, progress=progress)
    evals = [ensure_evaluation(r, split, evaluate, eval_kwargs) for r in runs]
    per_run = []
    for r, label, ev in zip(runs, labels, evals):
        folder = out / _safe(label)
        folder.mkdir(exist_ok=True)
        shutil.copyfile(r / "config.yaml", folder / "config.yaml")
        if ev is not None:
            (folder / f"eval_{split}.json").write_text(json.dumps(ev, indent=1) + "\n")
        pred = predict_run(r, split=split, index=index, samples=grid_samples, seed=seed, device=device)
        media = write_prediction(pred, folder, mp4=True)
        records = read_metrics(r)
        per_run.append({"label": label, "run": r, "folder": folder.name, "eval": ev, "media": media,
                        "pred": pred, "records": records, "plan": read_plan(r)})
    done = [(e, l) for e, l in zip(evals, labels) if e is not None]
    steps_png = plot_eval_steps([e for e, _ in done], [l for _, l in done], out / "eval_steps.png") if done else None

    page = _html(title, split, per_run, configs, curves.name, steps_png.name if steps_png else None, index)
    index_html = out / "index.html"
    index_html.write_text(page)
    return index_html


def _stat(ev: dict, *keys: str):
    """ev[keys[0]][keys[1]]...; None when a key is missing (an evaluation written before the
    moving-region metrics) or the value is null (no moving pixel anywhere)."""
    for k in keys:
        if not isinstance(ev, dict) or k not in ev:
            return None
        ev = ev[k]
    return ev


def _eval_table(per_run: list[dict]) -> str:
    """Runs as columns. "-": the run has no evaluation; "n/a": its evaluation has no such number
    (written before the moving-region metrics, or nothing moved)."""

    def region_rows(region: str, psnr: str, ssim: str) -> list:
        """(label, keys into the evaluation, format) of one region: whole frame or moving."""
        return [
            (f"PSNR{region}, mean over samples (dB)", ("model", psnr, "mean", "average"), "{:.2f}"),
            (f"PSNR{region}, first sample (dB)", ("model", psnr, "first", "average"), "{:.2f}"),
            (f"PSNR{region}, best of N (dB)", ("model", psnr, "best", "average"), "{:.2f}"),
            (f"PSNR{region}, worst of N (dB)", ("model", psnr, "worst", "average"), "{:.2f}"),
            (f"SSIM{region}, mean over samples", ("model", ssim, "mean", "average"), "{:.3f}"),
            (f"SSIM{region}, best-PSNR sample", ("model", ssim, "best", "average"), "{:.3f}"),
            (f"copy last frame: PSNR{region} (dB)", ("copy_last", psnr, "average"), "{:.2f}"),
            (f"copy last frame: SSIM{region}", ("copy_last", ssim, "average"), "{:.3f}"),
        ]

    whole = region_rows("", "psnr", "ssim")
    moving = region_rows(" moving region", "psnr_moving", "ssim_moving")
    head = "".join(f"<th>{html.escape(p['label'])}</th>" for p in per_run)
    body = []

    def row(name: str, cell) -> None:
        cells = "".join(cell(p["eval"]) if p["eval"] else "<td>-</td>" for p in per_run)
        body.append(f"<tr><td>{name}</td>{cells}</tr>")

    def number(keys: tuple[str, ...], fmt: str):
        def cell(ev: dict) -> str:
            v = _stat(ev, *keys)
            return f"<td>{fmt.format(v)}</td>" if v is not None else "<td>n/a</td>"
        return cell

    def margin(key: str):
        def cell(ev: dict) -> str:
            v = _stat(ev, key)
            return f"<td class=\"{'good' if v > 0 else 'bad'}\">{v:+.2f}</td>" if v is not None else "<td>n/a</td>"
        return cell

    for name, keys, fmt in whole:
        row(name, number(keys, fmt))
    row("margin over copy-last (dB)", margin("psnr_margin_db"))
    for name, keys, fmt in moving:
        row(name, number(keys, fmt))
    row("margin over copy-last, moving region (dB)", margin("psnr_moving_margin_db"))

    def region(ev: dict) -> str:
        t, f = _stat(ev, "motion_threshold"), _stat(ev, "moving_fraction")
        if t is None:
            return "<td>n/a</td>"
        return f"<td>&gt; {t:g}: {100 * f:.1f}%</td>" if f is not None else f"<td>&gt; {t:g}: n/a</td>"

    row("moving region: threshold, share of future pixels", region)
    # what the latent does (n/a: evaluation written before the latent block)
    row("latent: best of N minus mean sample (dB)", number(("latent", "best_of_n_gain_db", "psnr"), "{:+.2f}"))
    row("latent: best of N minus mean sample, moving region (dB)",
        number(("latent", "best_of_n_gain_db", "psnr_moving"), "{:+.2f}"))
    row("latent: posterior minus mean sample, moving region (dB)",
        number(("latent", "posterior_gain_db", "psnr_moving"), "{:+.2f}"))
    row("latent: sample diversity on moving pixels", number(("latent", "diversity_moving"), "{:.4f}"))

    def kl(ev: dict) -> str:
        v = _stat(ev, "latent", "kl_per_frame")
        if v is None:
            return "<td>n/a</td>"
        lat = ev.get("latent") or {}
        extra = [name for key, name in (("arm_latent", "arm"), ("sequence_latent", "sequence")) if lat.get(key)]
        names = [f"z{i + 1}" for i in range(len(v) - len(extra))] + extra
        return f"<td>{', '.join(f'{n} {x:.3g}' for n, x in zip(names, v))}</td>"

    row("latent: KL per predicted frame per level (nats)", kl)
    row("sequences x samples, frames",
        lambda ev: f"<td>{ev['n_sequences']} x {ev['n_samples']}, {ev['n_past']} &rarr; {ev['n_future']}</td>")
    row("checkpoint", lambda ev: f"<td>{html.escape(Path(ev['checkpoint']).name)}</td>")
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


PLAN_FILE = "plan.json"  # what `vidpred plan RUN` writes by default
PLAN_ARMS = ("model", "random", "simulator")


def read_plan(run: Path) -> dict | None:
    """The run's ``plan.json`` (``vidpred plan``), or None when it has none."""
    path = run / PLAN_FILE
    plan = read_json(path, PLAN_FILE, missing_ok=True)
    if plan is None:
        return None
    if not isinstance(plan, dict) or not any(isinstance(plan.get(a), dict) for a in PLAN_ARMS):
        raise DataError(f"{path}: not a vidpred plan result (expected keys {', '.join(PLAN_ARMS)})")
    for key in ("episodes", "seed"):
        if not isinstance(plan.get(key), int):
            raise DataError(f"{path}: {key} must be an integer, got {plan.get(key)!r}")
    for arm in PLAN_ARMS:
        for key in ("success_rate", "final_distance_px", "seconds_per_step"):
            if isinstance(plan.get(arm), dict) and not isinstance(plan[arm].get(key), (int, float)):
                raise DataError(f"{path}: {arm}.{key} must be a number, got {plan[arm].get(key)!r}")
    return plan


def plan_cost(plan: dict) -> str:
    """How the plan's model arm read the object's position (``--cost``); plans written before the
    flag read the last predicted frame (``final``)."""
    planner = plan.get("planner")
    return planner.get("cost", "final") if isinstance(planner, dict) else "final"


def plan_settings(plan: dict) -> str:
    """The planner settings a plan's numbers depend on most, as the report prints them: the model
    arm's cost reading, and (plans written since they were recorded) the largest arm step and the
    move cost."""
    planner = plan.get("planner") if isinstance(plan.get("planner"), dict) else {}
    parts = [f"model cost {plan_cost(plan)}"] if "model" in plan else []
    if isinstance(planner.get("action_limit_px"), (int, float)):
        parts.append(f"arm step at most {planner['action_limit_px']:g} px")
    if isinstance(planner.get("move_cost"), (int, float)):
        parts.append(f"move cost {planner['move_cost']:g}")
    return "".join(f", {html.escape(p)}" for p in parts)


def _plan_table(per_run: list[dict]) -> str:
    """Runs as columns, one row per arm: success rate, mean final distance, planning seconds per step."""
    head = "".join(f"<th>{html.escape(p['label'])}</th>" for p in per_run)
    body = []
    for arm in PLAN_ARMS:
        cells = []
        for p in per_run:
            r = (p["plan"] or {}).get(arm)
            cells.append(f"<td>{100 * r['success_rate']:.0f}% &middot; {r['final_distance_px']:.1f} px &middot; "
                         f"{r['seconds_per_step']:.2f} s/step</td>" if isinstance(r, dict) else "<td>-</td>")
        body.append(f"<tr><td>{arm}</td>{''.join(cells)}</tr>")
    episodes = "".join(f"<td>{p['plan']['episodes']} tasks, seed {p['plan']['seed']}{plan_settings(p['plan'])}</td>"
                       if p["plan"] else "<td>-</td>" for p in per_run)
    body.append(f"<tr><td>episodes</td>{episodes}</tr>")
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _training_table(per_run: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(p['label'])}</th>" for p in per_run)
    stats = []
    for p in per_run:
        epochs = [r for r in p["records"] if r.get("kind") == "epoch"]
        vals = [r["val_psnr"] for r in epochs if r.get("val_psnr") is not None]
        steps = [r for r in p["records"] if r.get("kind") == "step"]
        speed = [r["seq_per_s"] for r in steps if r.get("seq_per_s")]
        stats.append({
            "optimiser steps": str(max((r["step"] for r in p["records"]), default=0)),
            "epochs": str(len(epochs)),
            "best validation PSNR (dB)": f"{max(vals):.2f}" if vals else "-",
            "last validation PSNR (dB)": f"{vals[-1]:.2f}" if vals else "-",
            "last epoch MSE per frame": f"{epochs[-1]['mse']:.5f}" if epochs else "-",
            "sequences / s (median)": f"{sorted(speed)[len(speed) // 2]:.1f}" if speed else "-",
        })
    body = "".join(f"<tr><td>{k}</td>" + "".join(f"<td>{s[k]}</td>" for s in stats) + "</tr>" for k in stats[0])
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"


def _config_diff(per_run: list[dict], configs: list[dict]) -> str:
    flat = [flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f})
    diff = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]
    if len(per_run) < 2:
        return ""
    if not diff:
        return "<p>The runs' configs are identical.</p>"
    head = "".join(f"<th>{html.escape(p['label'])}</th>" for p in per_run)
    body = "".join(f"<tr><td>{html.escape(k)}</td>"
                   + "".join(f"<td>{html.escape(str(f.get(k, '-')))}</td>" for f in flat) + "</tr>" for k in diff)
    return f"<p>Keys that differ:</p><table><thead><tr><th>key</th>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(title: str, split: str, per_run: list[dict], configs: list[dict], curves: str, steps_png: str | None,
          index: int) -> str:
    esc = html.escape
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p class=\"note\">Runs: {', '.join(esc(str(p['run'])) for p in per_run)}. Generated {now}.</p>",
        f"<h2>Evaluation ({esc(split)} split)</h2>",
    ]
    if any(p["eval"] for p in per_run):
        parts.append("<p class=\"note\">Prior samples of the future from the observed frames; PSNR = "
                     "10 log10(1/MSE) per frame in [0, 1], SSIM Gaussian window 11, sigma 1.5; both averaged over "
                     "the predicted frames and the sequences. Best / worst of N: per sequence the sample with the "
                     "highest / lowest mean PSNR. The margin compares the mean-over-samples PSNR with copying the "
                     "last observed frame. <em>Moving region</em>: the same scores on the pixels where the true "
                     "future frame differs from the last observed one by more than the threshold in some channel "
                     "(the static table dominates whole-frame scores); frames without such pixels are left out, and "
                     "best / worst are picked by moving-region PSNR. n/a: not in the run's evaluation file (written "
                     "before these metrics: run <code>vidpred evaluate</code> again) or no pixel moved.</p>")
        parts.append(_eval_table(per_run))
        if steps_png:
            parts.append(f"<p><img src=\"{esc(steps_png)}\" "
                         "alt=\"per-step PSNR and SSIM, whole frame and moving region\"></p>")
    else:
        parts.append("<p>No evaluation available (run <code>vidpred evaluate</code> first).</p>")
    parts += ["<h2>Training</h2>", _training_table(per_run),
              f"<p><img src=\"{esc(curves)}\" alt=\"training curves\"></p>"]
    if any(p["plan"] for p in per_run):
        parts += ["<h2>Planning (<code>vidpred plan</code>)</h2>",
                  "<p class=\"note\">Push-to-goal tasks in the simulator (docs/planning.md): CEM with the run's "
                  "model, random actions, and the same CEM with the true simulator as its model. Per arm: share "
                  "of tasks with the object within the success radius of the goal at the end, mean final "
                  "distance, planning time per executed step.</p>", _plan_table(per_run)]
    first = per_run[0]["pred"]
    parts.append(f"<h2>Predictions: {esc(split)} sequence {index} ({esc(first['name'])})</h2>")
    parts.append("<p class=\"note\">Green: observed frames; red: predicted. The GIF shows the first prior "
                 "sample beside the ground truth; the grid shows, per frame, the ground truth, the posterior "
                 "reconstruction (latents inferred from the true future) and prior samples.</p>")
    parts.append("<div class=\"side\">")
    for p in per_run:
        f = p["folder"]
        links = " ".join(f"<a href=\"{esc(f)}/{esc(path.name)}\">{kind}</a>" for kind, path in p["media"].items())
        parts.append(f"<div><h3>{esc(p['label'])}</h3><img src=\"{esc(f)}/{esc(p['media']['gif'].name)}\" "
                     f"alt=\"{esc(p['label'])} prediction GIF\"><p class=\"note\">{links}</p></div>")
    parts.append("</div>")
    for p in per_run:
        f = p["folder"]
        grid = p["media"]["grid"].name
        parts.append(f"<h3>{esc(p['label'])}: prediction at each time step</h3>"
                     f"<a href=\"{esc(f)}/{esc(grid)}\"><img src=\"{esc(f)}/{esc(grid)}\" "
                     f"alt=\"{esc(p['label'])} prediction grid\"></a>")
    parts.append("<h2>Configs</h2>")
    parts.append(_config_diff(per_run, configs))
    parts.append("<div class=\"side\">")
    for p, c in zip(per_run, configs):
        text = yaml.safe_dump(c, sort_keys=False)
        parts.append(f"<div><h3>{esc(p['label'])}</h3><pre>{esc(text)}</pre></div>")
    parts.append("</div></body></html>")
    return "\n".join(parts) + "\n"
