"""vidpred plot / report: a PNG for several runs, a self-contained HTML page whose images load in Chromium."""

import os
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
                   "beta_max"):
        assert needle in html
    import re

    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) >= 6  # per-step plot, curves, 2 GIFs, 2 grids
    for src in srcs:
        assert not src.startswith(("/", "http")) and (report / src).is_file()
    for run in runs:  # the evaluations were computed and kept beside the checkpoints
        assert (run / "eval_test.json").is_file()


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
