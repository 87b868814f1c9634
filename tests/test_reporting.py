"""vidpred plot / report: a PNG for several runs, a self-contained HTML page whose images load in Chromium."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vidpred.cli import main
from vidpred.config import load_config

CHROMIUM = "/usr/bin/chromium"
TINY = ["model.width=8", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16", "model.cond_embed=8",
        "train.batch_size=2", "train.steps_per_epoch=2", "train.epochs=2", "train.n_future=3",
        "train.log_every=1", "train.device=cpu", "train.teacher_forcing.decay_start_epoch=1"]


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    from vidpred.training.trainer import train

    base = tmp_path_factory.mktemp("report")
    out = []
    for name, preset in (("monotonic", "synth-cpu"), ("cyclical", "synth-cpu-cyclical")):
        cfg = load_config(preset, [f"data.root={synth_root}", *TINY])
        train(cfg, base / name, progress=False)
        out.append(base / name)
    return out


def test_plot_two_runs(runs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert main(["plot", *map(str, runs), "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 400
    assert main(["plot", str(runs[0])]) == 0  # one run: default file in the run folder
    assert (runs[0] / "curves.png").is_file()


def test_plot_errors(runs, tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "metrics.jsonl" in err and "\n" not in err
    assert main(["plot", *map(str, runs), "--labels", "one"]) == 2
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "report"
    assert main(["report", *map(str, runs), "--out", str(out), "--samples", "2", "--index", "1"]) == 0
    return out


def test_report_is_self_contained(report, runs):
    html = (report / "index.html").read_text()
    for needle in ("monotonic", "cyclical", "copy last frame", "margin over copy-last", "train.kl.schedule",
                   "beta_max", "PSNR moving region, mean over samples (dB)", "margin over copy-last, moving region"):
        assert needle in html
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) >= 6  # per-step plot, curves, 2 GIFs, 2 grids
    for src in srcs:
        assert not src.startswith(("/", "http")) and (report / src).is_file()
    for run in runs:  # the evaluations were computed and kept beside the checkpoints
        assert (run / "eval_test.json").is_file()


def _row(html: str, name: str) -> list[str]:
    """The cells of the evaluation table's row ``name``."""
    match = re.search(rf"<tr><td>{re.escape(name)}</td>(.*?)</tr>", html)
    assert match, f"no row {name!r}"
    return re.findall(r"<td[^>]*>(.*?)</td>", match.group(1))


def test_report_shows_moving_region_numbers_and_n_a_for_old_files(runs, tmp_path):
    from vidpred.evaluation.evaluate import evaluate_run, write_json
    from vidpred.reporting.report import build_report

    new, old = tmp_path / "new", tmp_path / "old"
    for folder in (new, old):  # private copies: the module's runs keep their own evaluations
        shutil.copytree(runs[0], folder, ignore=shutil.ignore_patterns("eval_*.json", "tb"))
    res = evaluate_run(new, samples=1, progress=False)
    # numbers that cannot come from anywhere else
    res["model"]["psnr_moving"]["mean"]["average"] = 23.4567
    res["model"]["psnr_moving"]["best"]["average"] = 25.1234
    res["model"]["ssim_moving"]["mean"]["average"] = 0.4321
    res["copy_last"]["psnr_moving"]["average"] = 12.3012
    res["copy_last"]["ssim_moving"]["average"] = 0.2468
    res["psnr_moving_margin_db"] = 11.1555
    res["motion_threshold"], res["moving_fraction"] = 0.15, 0.0731
    res["model"]["psnr_moving"]["mean"]["per_step"][1] = None  # a step without motion: a gap in the plot
    # KL columns after the levels: the arm's latent, then the sequence latent
    res["latent"].update(kl_per_frame=[0.5, 1.25, 0.0031], arm_latent=True, sequence_latent=True)
    write_json(res, new / "eval_test.json")
    legacy = json.loads(json.dumps(res))  # as written before the moving-region metrics existed
    for key in ("motion_threshold", "moving_fraction", "moving_fraction_per_step", "frames_without_motion",
                "psnr_moving_margin_db"):
        del legacy[key]
    for m in ("psnr_moving", "ssim_moving"):
        del legacy["model"][m], legacy["copy_last"][m]
    del legacy["latent"]
    write_json(legacy, old / "eval_test.json")

    out = tmp_path / "report"
    build_report([new, old], out, evaluate=False, grid_samples=1)
    page = (out / "index.html").read_text()
    assert _row(page, "PSNR moving region, mean over samples (dB)") == ["23.46", "n/a"]
    assert _row(page, "PSNR moving region, best of N (dB)") == ["25.12", "n/a"]
    assert _row(page, "SSIM moving region, mean over samples") == ["0.432", "n/a"]
    assert _row(page, "copy last frame: PSNR moving region (dB)") == ["12.30", "n/a"]
    assert _row(page, "copy last frame: SSIM moving region") == ["0.247", "n/a"]
    assert _row(page, "margin over copy-last, moving region (dB)") == ["+11.16", "n/a"]
    assert _row(page, "moving region: threshold, share of future pixels") == ["&gt; 0.15: 7.3%", "n/a"]
    # whole-frame numbers beside them, the same in both files
    whole = f"{res['model']['psnr']['mean']['average']:.2f}"
    assert _row(page, "PSNR, mean over samples (dB)") == [whole, whole]
    # the latent block: from the file, n/a for the legacy one
    lat = res["latent"]
    assert _row(page, "latent: best of N minus mean sample, moving region (dB)") == [
        f"{lat['best_of_n_gain_db']['psnr_moving']:+.2f}", "n/a"]
    assert _row(page, "latent: KL per predicted frame per level (nats)") == [
        "z1 0.5, arm 1.25, sequence 0.0031", "n/a"]
    with Image.open(out / "eval_steps.png") as im:  # per-step plot: whole frame and moving region
        assert im.size[1] > 600


def test_report_images_load_in_chromium(report):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (make test installs Debian's chromium as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            page.goto(Path(report / "index.html").resolve().as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate(
                "() => Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        finally:
            browser.close()
    assert len(images) >= 6
    broken = [src for src, complete, width in images if not (complete and width > 0)]
    assert not broken, f"images that did not load: {broken}"


@pytest.mark.slow
def test_report_shows_planning_results_of_runs_that_have_them(runs, tmp_path):
    from vidpred.errors import DataError
    from vidpred.reporting.report import build_report

    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        shutil.copytree(runs[0], folder, ignore=shutil.ignore_patterns("tb"))
    plan = {"episodes": 7, "seed": 3,
            "model": {"success_rate": 0.4286, "final_distance_px": 3.21, "seconds_per_step": 0.57},
            "random": {"success_rate": 0.1429, "final_distance_px": 9.87, "seconds_per_step": 0.0},
            "simulator": {"success_rate": 1.0, "final_distance_px": 0.45, "seconds_per_step": 0.08}}
    (a / "plan.json").write_text(json.dumps(plan))
    out = tmp_path / "report"
    build_report([a, b], out, evaluate=False, grid_samples=1)
    page = (out / "index.html").read_text()
    assert "Planning (<code>vidpred plan</code>)" in page
    assert _row(page, "model") == ["43% &middot; 3.2 px &middot; 0.57 s/step", "-"]
    assert _row(page, "simulator") == ["100% &middot; 0.5 px &middot; 0.08 s/step", "-"]
    assert _row(page, "episodes") == ["7 tasks, seed 3, model cost final", "-"]  # written before --cost
    (b / "plan.json").write_text(json.dumps(plan | {"planner": {"cost": "tracked"}}))
    build_report([a, b], out, evaluate=False, grid_samples=1)
    page = (out / "index.html").read_text()
    assert _row(page, "episodes") == ["7 tasks, seed 3, model cost final", "7 tasks, seed 3, model cost tracked"]
    (b / "plan.json").write_text(json.dumps(plan | {"planner": {"cost": "tracked", "action_limit_px": 2.0,
                                                                 "move_cost": 0.2}}))
    build_report([a, b], out, evaluate=False, grid_samples=1)
    assert _row((out / "index.html").read_text(), "episodes")[1] == (
        "7 tasks, seed 3, model cost tracked, arm step at most 2 px, move cost 0.2")
    (b / "plan.json").write_text(json.dumps({k: v for k, v in plan.items() if k != "model"}))  # no model arm
    build_report([a, b], out, evaluate=False, grid_samples=1)
    assert _row((out / "index.html").read_text(), "episodes") == ["7 tasks, seed 3, model cost final",
                                                                  "7 tasks, seed 3"]
    (a / "plan.json").write_text("{broken")
    with pytest.raises(DataError, match="plan.json: not valid JSON"):
        build_report([a], tmp_path / "r2", evaluate=False, grid_samples=1)
    del plan["model"]["final_distance_px"]
    (a / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(DataError, match="plan.json: model.final_distance_px must be a number, got None"):
        build_report([a], tmp_path / "r3", evaluate=False, grid_samples=1)
