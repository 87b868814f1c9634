"""``vidpred demo``: the whole pipeline on a fresh machine, on CPU, in minutes.

1. generate a small synthetic pushing dataset (``vidpred data synth``), or reuse it;
2. train two short runs, monotonic vs cyclical KL annealing, both with decaying
   teacher forcing (presets ``synth-cpu`` and ``synth-cpu-cyclical``), side by side in
   two processes that share the CPU threads (``--jobs 1``: one after the other);
3. evaluate both on the test split (2 -> 10 frames) against copy-last-frame;
4. write the HTML report comparing them.

Everything goes under ``--out``; a second call reuses the data and finished
runs (an interrupted run resumes from its last checkpoint). The defaults are
sized to finish within 15 minutes on 2 CPU cores; ``--quick`` runs a tiny
version of every stage (seconds), as the tests do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

RUNS = (("monotonic", "synth-cpu"), ("cyclical", "synth-cpu-cyclical"))

# --quick: every stage, tiny (a smoke test of the pipeline, not a result).
QUICK = dict(train=8, validate=2, test=2, epochs=2, steps_per_epoch=2, samples=2)
QUICK_OVERRIDES = ["model.width=8", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16",
                   "model.cond_embed=8", "train.batch_size=4", "train.log_every=1",
                   "train.teacher_forcing.decay_start_epoch=1"]


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="synthetic data, two short CPU runs (monotonic vs cyclical KL), evaluation, HTML report",
        description="Generate a small synthetic dataset, train two short runs (monotonic vs cyclical KL "
        "annealing, decaying teacher forcing) on CPU, evaluate them against copy-last-frame and write an "
        "HTML report. Defaults fit about 15 minutes on 2 CPU cores. Existing data and finished runs under "
        "--out are reused.",
    )
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: %(default)s)")
    p.add_argument("--train", type=int, default=None, help="train sequences (default: 480; quick: 8)")
    p.add_argument("--validate", type=int, default=None, help="validation sequences (default: 24; quick: 2)")
    p.add_argument("--test", type=int, default=None, help="test sequences (default: 32; quick: 2)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the presets'; quick: 2)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="optimiser steps per epoch (default: one pass over the train split; quick: 2)")
    p.add_argument("--samples", type=int, default=None, help="evaluation samples per sequence (default: 10)")
    p.add_argument("--workers", type=int, default=2, help="data generation processes (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2,
                   help="training runs at once, each in its own process with an equal share of the CPU threads; "
                   "1 trains them one after the other (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default: %(default)s)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="(default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny data, model and runs: checks the pipeline in seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (stage lines only)")
    p.set_defaults(func=cmd_demo)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _prepare_data(root: Path, counts: dict, seed: int, workers: int, progress: bool) -> None:
    from vidpred.data.synth import SYNTH_INFO, generate
    from vidpred.errors import DataError

    params = dict(counts, seed=seed, hidden_causes=True)
    if root.exists():
        try:
            info = json.loads((root / SYNTH_INFO).read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("params") != params:
            raise DataError(f"{root} holds other data (expected a synthetic dataset with {params}); "
                            "remove it or choose another --out")
        _say(f"      reusing {root}")
        return
    generate(root, seed=seed, workers=workers, quiet=not progress, hidden=True, **counts)


def _train_run(out: Path, preset: str, overrides: list[str], progress: bool) -> dict:
    from vidpred.config import load_config
    from vidpred.errors import ConfigError
    from vidpred.training.checkpoint import LAST, load
    from vidpred.training.trainer import train

    cfg = load_config(preset, overrides)
    resume = (out / LAST).is_file()
    if resume:
        # through the config object: a setting added since the run was trained takes its default
        old = load(out / LAST)["config_obj"].to_dict()
        if old != cfg.to_dict():
            raise ConfigError(f"{out} holds a run with other settings; remove it or choose another --out")
        _say(f"      resuming {out} (finished runs are kept as they are)")
    return train(cfg, out, resume=resume, progress=progress)


def _train_child(queue, name: str, run: Path, preset: str, overrides: list[str], threads: int) -> None:
    """One demo run in a process of its own: (name, summary or error, seconds) onto ``queue``."""
    import torch

    from vidpred.errors import VidpredError

    _exit_with_parent()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        summary = _train_run(run, preset, overrides, progress=False)
    except VidpredError as err:
        queue.put((name, err, time.perf_counter() - t0))
    except BaseException as err:  # noqa: BLE001 - reported by the parent as the run's failure
        trace = traceback.format_exc()
        queue.put((name, RuntimeError(f"training {run} failed: {type(err).__name__}: {err}\n{trace}"), 0.0))
    else:
        queue.put((name, summary, time.perf_counter() - t0))


def _exit_with_parent() -> None:
    """End this process as soon as the demo's process does, however that ends (a SIGKILL runs
    no cleanup there): a later demo resumes the run, and must not find it still being written."""
    import multiprocessing
    import os
    import threading

    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()


def _train_parallel(plan: tuple[tuple[str, str], ...], runs: list[Path], overrides: list[str], jobs: int,
                    threads: int, progress: bool, n_train: int, child=_train_child) -> dict[str, tuple[dict, float]]:
    """Train ``plan``'s (name, preset) runs ``jobs`` at a time, each in a spawned process with
    ``threads`` threads; returns {name: (train's summary, seconds)}.

    On this machine's small models two one-thread runs side by side do more work per second than
    one after the other with two threads each (the step loop of a free run is many small operations
    that a second thread barely speeds up; ``benchmarks/RESULTS.md``). Progress is read from each
    run's ``metrics.jsonl``. The first failure stops the other runs (their last checkpoints stay,
    so a second call resumes them) and is raised here. ``child``: the process's function (tests).
    """
    import multiprocessing
    import queue as queue_module

    from tqdm import tqdm

    from vidpred.config import load_config
    from vidpred.errors import VidpredError
    from vidpred.training.trainer import METRICS, read_metrics

    data = load_config(plan[0][1], overrides).data
    if data.use_cache:  # built once here rather than by both runs at once
        from vidpred.data.cache import ensure_cache

        for split in ("train", "validate"):
            ensure_cache(data.root, split, quiet=not progress)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds OpenMP threads
    queue = ctx.Queue()
    todo = [(name, preset, run) for (name, preset), run in zip(plan, runs)]
    bars = {}
    if progress:
        for k, (name, preset, run) in enumerate(todo):
            tc = load_config(preset, overrides).train
            total = tc.epochs * (tc.steps_per_epoch or n_train // tc.batch_size)
            bars[name] = tqdm(total=total, desc=f"train {name}", unit="step", position=k, dynamic_ncols=True)
    procs: dict[str, tuple[multiprocessing.process.BaseProcess, Path]] = {}  # name -> (process, run folder)
    done: dict[str, tuple[dict, float]] = {}
    try:
        while len(done) < len(plan):
            while todo and len(procs) < jobs:
                name, preset, run = todo.pop(0)
                proc = ctx.Process(target=child, args=(queue, name, run, preset, overrides, threads),
                                   name=f"vidpred-train-{name}")
                proc.start()
                procs[name] = (proc, run)
            try:
                name, result, seconds = queue.get(timeout=1.0)
            except queue_module.Empty:  # meanwhile: the bars, and a process that ended without a word
                for name, (proc, run) in procs.items():
                    if name in bars and (run / METRICS).is_file():
                        steps = [r["step"] for r in read_metrics(run)]
                        bars[name].update(max(steps, default=bars[name].n) - bars[name].n)
                ended = [(proc, run) for proc, run in procs.values() if proc.exitcode is not None]
                if not ended:
                    continue
                try:  # its report may still be on its way
                    name, result, seconds = queue.get(timeout=5.0)
                except queue_module.Empty:
                    proc, run = ended[0]
                    raise VidpredError(f"training {run} ended (exit code {proc.exitcode}) without a result; its last "
                                       "checkpoint is kept: the same command resumes it") from None
            procs.pop(name)[0].join()
            if isinstance(result, BaseException):
                raise result
            done[name] = (result, seconds)
            if name in bars:
                bars[name].update(result["steps"] - bars[name].n)
    finally:
        for proc, _ in procs.values():
            if proc.is_alive():
                proc.terminate()
            proc.join()
        for bar in bars.values():
            bar.close()
    return {name: done[name] for name, _ in plan}


def _reusable_evaluation(run: Path, samples: int) -> dict | None:
    """The run's eval_test.json when it is newer than the checkpoint and used the same settings."""
    from vidpred.evaluation.evaluate import read_json
    from vidpred.evaluation.metrics import MOTION_THRESHOLD
    from vidpred.reporting.report import checkpoint_mtime

    path = run / "eval_test.json"
    if not path.is_file() or path.stat().st_mtime < checkpoint_mtime(run):
        return None
    try:
        res = read_json(path)
    except Exception:
        return None
    if (res.get("n_samples"), res.get("seed"), res.get("n_past"), res.get("n_future")) != (samples, 0, 2, 10):
        return None
    if "psnr_moving" not in res.get("model", {}) or res.get("motion_threshold") != MOTION_THRESHOLD:
        return None  # written before the moving-region metrics, or with another mask
    if "latent" not in res:
        return None  # written before the latent block
    return res


def cmd_demo(args: argparse.Namespace) -> int:
    from vidpred.errors import ConfigError
    from vidpred.evaluation.evaluate import evaluate_run, format_table, write_json
    from vidpred.reporting.report import build_report

    quick = QUICK if args.quick else {}
    counts = {k: getattr(args, k) or quick.get(k) or default
              for k, default in (("train", 480), ("validate", 24), ("test", 32))}
    for k, v in counts.items():
        if v < 1:
            raise ConfigError(f"--{k} must be >= 1, got {v}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    epochs = args.epochs or quick.get("epochs")
    steps = args.steps_per_epoch or quick.get("steps_per_epoch")
    samples = args.samples or quick.get("samples") or 10
    progress = not args.no_progress
    out: Path = args.out
    data = out / "data"
    overrides = [f"data.root={data}", f"train.device={args.device}"]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    if steps is not None:
        overrides.append(f"train.steps_per_epoch={steps}")
    if args.quick:
        overrides += QUICK_OVERRIDES

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, t0: float) -> None:
        now = time.perf_counter()  # one reading for both, so the stage never prints longer than the total
        timings[name] = round(now - t0, 1)
        _say(f"      done in {now - t0:.0f} s (total {now - started:.0f} s)")

    _say(f"vidpred demo -> {out}" + (" (quick)" if args.quick else ""))
    _say(f"[1/4] synthetic data: {counts['train']} train, {counts['validate']} validate, {counts['test']} test "
         f"sequences (seed {args.seed})")
    t0 = time.perf_counter()
    _prepare_data(data, counts, args.seed, max(1, args.workers), progress)
    stage("data", t0)

    jobs = min(args.jobs, len(RUNS))
    runs = [out / "runs" / name for name, _ in RUNS]
    if jobs == 1:
        for k, ((name, preset), run) in enumerate(zip(RUNS, runs)):
            _say(f"[2/4] training {k + 1}/{len(RUNS)}: {name} KL annealing (preset {preset}) -> {run}")
            t0 = time.perf_counter()
            summary = _train_run(run, preset, overrides, progress)
            stage(f"train_{name}", t0)
            _say(f"      {summary['steps']} steps, best validation PSNR {summary['best_val_psnr']:.2f} dB")
    else:
        import torch

        threads = max(1, torch.get_num_threads() // jobs)
        _say(f"[2/4] training {len(RUNS)} runs, {jobs} at a time with {threads} thread(s) each: "
             + ", ".join(f"{name} KL annealing (preset {preset})" for name, preset in RUNS) + f" -> {runs[0].parent}")
        t0 = time.perf_counter()
        done = _train_parallel(RUNS, runs, overrides, jobs, threads, progress, counts["train"])
        for name, (summary, seconds) in done.items():
            timings[f"train_{name}"] = round(seconds, 1)
            _say(f"      {name}: {summary['steps']} steps in {seconds:.0f} s, best validation PSNR "
                 f"{summary['best_val_psnr']:.2f} dB")
        stage("train", t0)

    _say(f"[3/4] evaluation on the test split ({samples} samples per sequence)")
    t0 = time.perf_counter()
    results = {}
    for run in runs:
        res = _reusable_evaluation(run, samples)
        if res is None:
            res = evaluate_run(run, split="test", samples=samples, seed=0, device=args.device,
                               progress=None if progress else False)
            write_json(res, run / "eval_test.json")
        results[run.name] = res
        _say(f"--- {run.name}")
        _say(format_table(res))
    stage("evaluate", t0)

    _say("[4/4] HTML report")
    t0 = time.perf_counter()
    report = build_report(runs, out / "report", split="test", index=0, evaluate=False, samples=samples,
                          device=args.device, title="vidpred demo: monotonic vs cyclical KL annealing")
    stage("report", t0)

    total = time.perf_counter() - started
    summary = {"out": str(out), "quick": bool(args.quick), "counts": counts, "seconds": round(total, 1),
               "stages": timings, "report": str(report), "runs": {}}
    _say("")
    _say(f"demo finished in {total / 60:.1f} min. Test PSNR (2 -> 10 frames, mean of {samples} samples), "
         "whole frame and on the moving pixels, against copying the last observed frame:")
    for name, res in results.items():
        model, copy = res["model"], res["copy_last"]
        summary["runs"][name] = {
            "psnr": model["psnr"]["mean"]["average"], "copy_last_psnr": copy["psnr"]["average"],
            "margin_db": res["psnr_margin_db"],
            "ssim": model["ssim"]["mean"]["average"], "copy_last_ssim": copy["ssim"]["average"],
            "psnr_moving": model["psnr_moving"]["mean"]["average"],
            "copy_last_psnr_moving": copy["psnr_moving"]["average"],
            "moving_margin_db": res["psnr_moving_margin_db"],
            "ssim_moving": model["ssim_moving"]["mean"]["average"],
            "copy_last_ssim_moving": copy["ssim_moving"]["average"],
            "best_of_n_gain_db": res["latent"]["best_of_n_gain_db"],
            "posterior_gain_db": res["latent"]["posterior_gain_db"],
            "diversity_moving": res["latent"]["diversity_moving"],
            "kl_per_frame": res["latent"]["kl_per_frame"],
        }
        for region, key, margin in (("whole frame", "psnr", "psnr_margin_db"),
                                    ("moving region", "psnr_moving", "psnr_moving_margin_db")):
            ours, base, diff = model[key]["mean"]["average"], copy[key]["average"], res[margin]
            if ours is None:
                _say(f"  {name:10s} {region:13s}: no moving pixels in the test split")
                continue
            _say(f"  {name:10s} {region:13s} {ours:6.2f} dB; copy-last {base:6.2f} dB ({diff:+.2f} dB)")
        gain, kl = res["latent"]["best_of_n_gain_db"], res["latent"]["kl_per_frame"]
        gains = ", ".join("n/a" if v is None else f"{v:+.2f} dB" for v in (gain["psnr"], gain["psnr_moving"]))
        _say(f"  {name:10s} best of {samples} minus mean sample (whole, moving): {gains}; "
             f"KL per frame {', '.join(f'{v:.3g}' for v in kl)} nats")
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _say(f"report: {report}")
    sys.stdout.flush()
    return 0
