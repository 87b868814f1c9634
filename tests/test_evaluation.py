"""vidpred evaluate / predict: JSON schema, determinism, the copy-last baseline, pictures, errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vidpred.cli import main
from vidpred.config import load_config
from vidpred.data import open_split
from vidpred.evaluation import evaluate as ev
from vidpred.reporting import media

TINY = ["model.width=8", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16", "model.cond_embed=8",
        "train.batch_size=2", "train.steps_per_epoch=2", "train.epochs=1", "train.n_future=3",
        "train.log_every=1", "train.device=cpu"]


def train_tiny(root, out, extra=()):
    from vidpred.training.trainer import train

    cfg = load_config("synth-cpu", [f"data.root={root}", *TINY, *extra])
    train(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def run(synth_root, tmp_path_factory):
    return train_tiny(synth_root, tmp_path_factory.mktemp("eval") / "run")


def test_evaluate_json_schema_and_determinism(run, tmp_path, capsys):
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["evaluate", str(run), "--samples", "3", "--seed", "7", "--out", str(out1), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "copy-last" in printed and "t=3" in printed and str(out1) in printed
    assert main(["evaluate", str(run), "--samples", "3", "--seed", "7", "--out", str(out2), "--no-progress"]) == 0
    a, b = json.loads(out1.read_text()), json.loads(out2.read_text())
    assert a["model"] == b["model"] and a["copy_last"] == b["copy_last"]  # same seed: identical numbers
    # noise is keyed by (seed, sequence, sample), so the batch size changes only float rounding
    c = ev.evaluate_run(run, samples=3, seed=7, batch_size=1, progress=False)
    np.testing.assert_allclose(c["model"]["psnr"]["first"]["per_step"], a["model"]["psnr"]["first"]["per_step"],
                               rtol=1e-5)
    assert a["format"] == ev.FORMAT and a["split"] == "test" and a["seed"] == 7
    assert (a["n_past"], a["n_future"], a["n_sequences"], a["n_samples"]) == (2, 3, 2, 3)
    assert a["checkpoint"].endswith("best.pt")
    for m in ("psnr", "ssim"):
        for stat in ("first", "mean", "best", "worst"):
            s = a["model"][m][stat]
            assert len(s["per_step"]) == 3
            assert s["average"] == pytest.approx(np.mean(s["per_step"]), abs=1e-5)
        assert len(a["copy_last"][m]["per_step"]) == 3
    p = a["model"]["psnr"]
    assert p["worst"]["average"] <= p["mean"]["average"] <= p["best"]["average"]
    assert a["psnr_margin_db"] == pytest.approx(p["mean"]["average"] - a["copy_last"]["psnr"]["average"], abs=1e-5)
    assert len(a["per_sequence"]) == 2
    # another seed gives other samples
    out3 = tmp_path / "c.json"
    assert main(["evaluate", str(run), "--samples", "3", "--seed", "8", "--out", str(out3), "--no-progress"]) == 0
    assert json.loads(out3.read_text())["model"]["psnr"]["first"] != a["model"]["psnr"]["first"]


def test_default_output_and_horizon_flags(run, capsys):
    assert main(["evaluate", str(run), "--samples", "1", "--n-past", "3", "--n-future", "5",
                 "--max-sequences", "1", "--no-progress"]) == 0
    res = json.loads((run / "eval_test.json").read_text())
    assert (res["n_past"], res["n_future"], res["n_sequences"]) == (3, 5, 1)
    assert len(res["model"]["psnr"]["mean"]["per_step"]) == 5


def test_copy_last_baseline_by_hand(run, synth_root):
    res = ev.evaluate_run(run, samples=1, n_past=2, n_future=3, progress=False)
    ds = open_split(synth_root, "test", window=5)
    per_step = np.zeros(3)
    for i in range(len(ds)):
        frames = ds[i][0].numpy().astype(np.float64)
        for k in range(3):
            mse = np.mean((frames[1] - frames[2 + k]) ** 2)  # last observed frame is frame index 1
            per_step[k] += 10 * np.log10(1.0 / mse) / len(ds)
    np.testing.assert_allclose(res["copy_last"]["psnr"]["per_step"], per_step, atol=1e-4)
    # SSIM of the baseline is below 1 (frames move) and the perfect prediction scores 1
    assert all(0 < s < 1 for s in res["copy_last"]["ssim"]["per_step"])
    x = ds[0][0].unsqueeze(0)
    assert ev.psnr(x, x).min() >= 99 and torch.allclose(ev.ssim(x, x), torch.ones(1, 5), atol=1e-4)


def test_predict_writes_gif_grid_and_actions_change_it(run, synth_root, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", str(run), "--index", "1", "--out", str(out), "--samples", "2"]) == 0
    gif, grid = out / "test_1.gif", out / "test_1_grid.png"
    with Image.open(gif) as im:
        assert im.n_frames == 5  # n_past + n_future of the tiny run
        assert im.size[0] > 2 * 64 * 3
    with Image.open(grid) as im:
        assert im.size == media.grid_size(rows=2 + 2, cols=5, scale=2)
        # the ground-truth row holds the (upscaled) frames themselves
        frames = open_split(synth_root, "test", window=5)[1][0]
        x, y = media.cell_origin(0, 4, scale=2)
        cell = np.asarray(im.convert("RGB"))[y:y + 128, x:x + 128]
        np.testing.assert_array_equal(cell, np.asarray(media.upscale(frames[4], 2)))

    # a what-if CSV (actions reversed, 4 columns) changes the predicted future
    conds = open_split(synth_root, "test", window=30)[1][1].numpy()
    csv = tmp_path / "whatif.csv"
    np.savetxt(csv, -conds[:, :4] * 3, delimiter=",")
    base = ev.predict_run(run, index=1, samples=1)
    what = ev.predict_run(run, index=1, samples=1, actions=csv)
    assert not torch.allclose(base["samples"], what["samples"])
    assert torch.equal(base["truth"], what["truth"])
    assert main(["predict", str(run), "--index", "1", "--out", str(out), "--actions", str(csv)]) == 0
    assert (out / "test_1_whatif.gif").is_file()


def test_mp4_written_when_ffmpeg_available(tmp_path):
    frames = media.comparison_frames(torch.rand(4, 3, 64, 64), torch.rand(2, 3, 64, 64), n_past=2, scale=1)
    assert all(f.size[0] % 2 == 0 and f.size[1] % 2 == 0 for f in frames)  # encoders need even sizes
    path = media.save_mp4(frames, tmp_path / "a.mp4")
    if not media.mp4_available():
        assert path is None
        pytest.skip("imageio-ffmpeg not installed: MP4 output is optional")
    assert path.stat().st_size > 0


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidpred: error:") and "\n" not in err
    return err


def test_errors(run, tmp_path, capsys):
    assert "not found" in _error(capsys, ["evaluate", str(tmp_path / "nope")])
    assert "not found" in _error(capsys, ["predict", str(tmp_path / "nope")])
    assert "out of range" in _error(capsys, ["predict", str(run), "--index", "2", "--out", str(tmp_path)])
    assert "out of range" in _error(capsys, ["predict", str(run), "--index", "-1", "--out", str(tmp_path)])
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,5,6\n")
    assert "columns" in _error(capsys, ["predict", str(run), "--actions", str(bad), "--out", str(tmp_path)])
    bad.write_text("1,2,3,4\n" * 3)
    assert "rows" in _error(capsys, ["predict", str(run), "--actions", str(bad), "--out", str(tmp_path)])
    bad.write_text("1,2,x,4\n" * 30)
    assert "bad.csv" in _error(capsys, ["predict", str(run), "--actions", str(bad), "--out", str(tmp_path)])
    assert "not found" in _error(capsys, ["predict", str(run), "--actions", str(tmp_path / "no.csv"),
                                          "--out", str(tmp_path)])
    assert "<= 30" in _error(capsys, ["evaluate", str(run), "--n-future", "29"])
    assert "--samples" in _error(capsys, ["evaluate", str(run), "--samples", "0"])


def test_incompatible_or_corrupt_checkpoint(run, tmp_path, capsys):
    ckpt = torch.load(run / "best.pt", weights_only=False)
    ckpt["config"]["model"]["rnn_size"] = 32  # the weights no longer fit the config
    torch.save(ckpt, tmp_path / "other.pt")
    assert "does not fit" in _error(capsys, ["evaluate", str(tmp_path / "other.pt")])
    ckpt["config"]["model"]["codec"] = "nope"
    torch.save(ckpt, tmp_path / "bad.pt")
    assert "incompatible config" in _error(capsys, ["evaluate", str(tmp_path / "bad.pt")])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert "corrupt" in _error(capsys, ["predict", str(tmp_path / "junk.pt")])
