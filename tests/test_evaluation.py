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
from vidpred.evaluation import metrics
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
    # metrics that see motion: the same shape per statistic, on the moving region
    assert a["motion_threshold"] == 0.1 and 0 < a["moving_fraction"] < 0.5
    assert len(a["moving_fraction_per_step"]) == 3 and a["frames_without_motion"] == 0  # the arm always moves
    assert "moving-region PSNR" in a["best_of"]
    for m in ("psnr_moving", "ssim_moving"):
        for stat in ("first", "mean", "best", "worst"):
            s = a["model"][m][stat]
            assert len(s["per_step"]) == 3 and all(v is not None for v in s["per_step"])
            assert s["average"] == pytest.approx(np.mean(s["per_step"]), abs=1e-5)  # every frame moves here
        assert len(a["copy_last"][m]["per_step"]) == 3
    pm = a["model"]["psnr_moving"]
    assert pm["worst"]["average"] <= pm["mean"]["average"] <= pm["best"]["average"]
    assert a["psnr_moving_margin_db"] == pytest.approx(
        pm["mean"]["average"] - a["copy_last"]["psnr_moving"]["average"], abs=1e-5)
    assert {"psnr_moving_mean", "psnr_moving_copy_last", "moving_fraction"} <= set(a["per_sequence"][0])
    for label in ("PSNR moving region (dB)", "SSIM moving region", "moving region: pixels",
                  "mean-sample PSNR minus copy-last, moving region:"):
        assert label in printed
    assert printed.count("copy-last ") >= 4  # a baseline row in each of the four sections
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
    # the same on the moving region: pixels where some channel of the true frame moved by more than 0.1
    moving = np.full((len(ds), 3), np.nan)
    fraction = np.zeros((len(ds), 3))
    for i in range(len(ds)):
        frames = ds[i][0].numpy().astype(np.float64)
        for k in range(3):
            diff = frames[2 + k] - frames[1]  # (3, H, W)
            mask = np.abs(diff).max(axis=0) > 0.1  # (H, W); differences are multiples of 1/255, none near 0.1
            fraction[i, k] = mask.mean()
            if mask.any():
                moving[i, k] = 10 * np.log10(1.0 / np.mean(diff[:, mask] ** 2))
    np.testing.assert_allclose(res["copy_last"]["psnr_moving"]["per_step"], np.nanmean(moving, 0), atol=1e-3)
    assert res["copy_last"]["psnr_moving"]["average"] == pytest.approx(np.nanmean(moving), abs=1e-3)
    assert res["moving_fraction"] == pytest.approx(fraction.mean(), abs=1e-6)
    # every moving pixel is off by more than 0.1 in some channel, so copy-last's moving-region MSE is at least
    # 0.1^2 / 3: its moving-region PSNR can never exceed 10 log10(3 / 0.1^2) = 24.8 dB, and here is far below
    # its whole-frame PSNR, which the static table props up
    assert max(res["copy_last"]["psnr_moving"]["per_step"]) < 10 * np.log10(3 / 0.1 ** 2)
    assert res["copy_last"]["psnr_moving"]["average"] < res["copy_last"]["psnr"]["average"] - 5
    # SSIM of the baseline is below 1 (frames move) and the perfect prediction scores 1
    assert all(0 < s < 1 for s in res["copy_last"]["ssim"]["per_step"])
    x = ds[0][0].unsqueeze(0)
    assert metrics.psnr(x, x).min() >= 99 and torch.allclose(metrics.ssim(x, x), torch.ones(1, 5), atol=1e-4)


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
    # the top row is the simulator's re-run: the observed frames as recorded, another future
    assert base["truth_source"] == "recorded" and what["truth_source"] == "simulator"
    assert torch.equal(base["truth"][:2], what["truth"][:2])
    assert (base["truth"][2:] - what["truth"][2:]).abs().max() > 0.2
    assert main(["predict", str(run), "--index", "1", "--out", str(out), "--actions", str(csv)]) == 0
    assert (out / "test_1_whatif.gif").is_file()
    with Image.open(out / "test_1_whatif_grid.png") as im:
        x, y = media.cell_origin(0, 4, scale=2)
        cell = np.asarray(im.convert("RGB"))[y:y + 128, x:x + 128]
        np.testing.assert_array_equal(cell, np.asarray(media.upscale(what["truth"][4], 2)))


def ev_model(run):
    from vidpred.training.checkpoint import load_model

    return load_model(run)[0]


def test_whatif_truth_is_the_simulator_under_the_new_actions(run, synth_root, tmp_path):
    """Zero actions keep the arm where it was in the simulator's row; other actions move it
    elsewhere; the rows that made the observed frames are not what-if."""
    from vidpred.data import synth

    T, n_past = 5, 2
    conds = open_split(synth_root, "test", window=30)[1][1].numpy()
    zeros, other = tmp_path / "zeros.csv", tmp_path / "other.csv"
    np.savetxt(zeros, np.zeros((30, 4)), delimiter=",")
    np.savetxt(other, np.tile([0.04, 0.0, 0.0, 1.0], (30, 1)), delimiter=",")
    still = ev.predict_run(run, index=1, samples=1, actions=zeros)
    # the posterior row reconstructs the simulator's what-if future, not the recorded one
    lag = load_config("synth-cpu").model.action_lag
    again = ev.predict_sequence(ev_model(run), still["truth"], ev.read_actions(zeros, torch.from_numpy(
        conds[:T].copy()), n_past, lag), n_past, 1, samples=1)
    torch.testing.assert_close(still["posterior"], again["posterior"])
    info = json.loads((synth_root / "synth.json").read_text())
    recorded = synth.scripted_actions(info["params"]["seed"], "test", 1, info["params"]["hidden_causes"])
    replayed = synth.replay(0, "test", 1, np.concatenate([recorded[:n_past], np.zeros((T - n_past, 4))]))
    expected = torch.from_numpy(replayed["frames"]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(still["truth"], expected)
    arm = replayed["positions"][:, :2] * 64  # px
    assert np.abs(arm[n_past:] - arm[n_past - 1]).max() < 1.5
    moved = synth.replay(0, "test", 1, np.concatenate([recorded[:n_past], np.tile([0.04, 0, 0, 1.0], (T - n_past, 1))]))
    assert np.linalg.norm(moved["positions"][-1, :2] - replayed["positions"][-1, :2]) * 64 > 3
    went = ev.predict_run(run, index=1, samples=1, actions=other)
    assert (went["truth"][n_past:] - still["truth"][n_past:]).abs().max() > 0.2
    assert torch.equal(went["truth"][:n_past], still["truth"][:n_past])
    # the recorded conditions of the observed steps stay: only later rows are read
    c = torch.from_numpy(conds[:T].copy())
    replaced = ev.read_actions(zeros, c, n_past, lag)
    assert torch.equal(replaced[: n_past - lag], c[: n_past - lag]) and replaced[n_past - lag:, :4].abs().max() == 0
    assert torch.equal(replaced[:, 4:], c[:, 4:])  # 4 columns: the positions are the recorded ones
    seven = tmp_path / "seven.csv"  # 7 columns: positions too, but only of the frames to predict
    np.savetxt(seven, np.full((30, 7), 0.5), delimiter=",")
    for lag_ in (0, 1):
        both = ev.read_actions(seven, c, n_past, lag_)
        assert torch.equal(both[: n_past - lag_, :4], c[: n_past - lag_, :4])
        assert (both[n_past - lag_:, :4] == 0.5).all()
        assert torch.equal(both[:n_past, 4:], c[:n_past, 4:]) and (both[n_past:, 4:] == 0.5).all()


def test_whatif_on_data_without_a_simulator_shows_only_the_observed_frames(run, synth_copy, tmp_path):
    (synth_copy / "synth.json").unlink()  # as BAIR: nobody can re-run it
    csv = tmp_path / "zeros.csv"
    np.savetxt(csv, np.zeros((30, 4)), delimiter=",")
    what = ev.predict_run(run, index=0, samples=1, actions=csv, data_root=str(synth_copy))
    assert what["truth_source"] == "none"
    assert torch.isfinite(what["truth"][:2]).all() and torch.isnan(what["truth"][2:]).all()
    out = tmp_path / "p"
    media.write_prediction(what, out, mp4=False)
    assert torch.isnan(what["posterior"]).all()
    with Image.open(out / "test_0_whatif_grid.png") as im:
        for row in (0, 1):  # no true future, no posterior reconstruction of it
            x, y = media.cell_origin(row, 3, scale=2)
            assert (np.asarray(im.convert("RGB"))[y:y + 128, x:x + 128] == media.EMPTY).all()


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
    for bad in ("0", "1", "-0.2", "nan"):
        assert "--motion-threshold must be > 0 and < 1" in _error(
            capsys, ["evaluate", str(run), "--motion-threshold", bad, "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_motion_threshold_flag_is_recorded(run, tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["evaluate", str(run), "--samples", "1", "--motion-threshold", "0.3", "--out", str(out),
                 "--no-progress"]) == 0
    assert "more than 0.3" in capsys.readouterr().out
    high = json.loads(out.read_text())
    low = ev.evaluate_run(run, samples=1, progress=False)  # default 0.1
    assert high["motion_threshold"] == 0.3 and low["motion_threshold"] == 0.1
    assert high["moving_fraction"] < low["moving_fraction"]  # a higher threshold keeps fewer pixels
    assert high["model"]["psnr"] == low["model"]["psnr"]  # whole-frame numbers do not depend on it


def test_table_of_an_old_evaluation_says_n_a(run):
    res = ev.evaluate_run(run, samples=1, progress=False)
    for key in ("motion_threshold", "moving_fraction", "moving_fraction_per_step", "frames_without_motion",
                "psnr_moving_margin_db"):
        del res[key]
    for m in ("psnr_moving", "ssim_moving"):
        del res["model"][m], res["copy_last"][m]
    del res["latent"]
    table = ev.format_table(res)  # what `vidpred demo` prints for an eval_test.json written before these metrics
    assert "moving region: n/a (evaluation written before the moving-region metrics)" in table
    assert "PSNR moving region (dB)" not in table
    assert table.splitlines()[-1] == "mean-sample PSNR minus copy-last, moving region: n/a"
    assert "PSNR (dB)" in table and "copy-last" in table


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


def test_batched_samples_equal_one_rollout_per_sample(monkeypatch):
    """predict_samples runs sequences x samples as one batch (in chunks); each row must be the
    rollout that sample's own noise gives alone."""
    import vidpred.evaluation.evaluate as ev
    from vidpred.config import ModelConfig
    from vidpred.models.svg import SVG, rollout

    torch.manual_seed(0)
    model = SVG(ModelConfig(width=4, g_dim=16, z_dim=4, rnn_size=16, cond_embed=8, decoder="cdna",
                            kernel_size=3, skip_frame="previous")).eval()
    frames, conds = torch.rand(2, 6, 3, 64, 64), torch.randn(2, 6, 7)
    monkeypatch.setattr(ev, "ROLLOUT_BATCH", 4)  # 2 sequences: chunks of 2 samples, then 1
    out = ev.predict_samples(model, frames, conds, 2, [5, 9], 3, seed=7)
    assert out.shape == (2, 3, 4, 3, 64, 64)
    for b, index in enumerate([5, 9]):
        for s in range(3):
            noise = ev.sample_noise(7, index, s, (5, 4)).unsqueeze(0)
            alone = rollout(model, frames[b : b + 1, :2], conds[b : b + 1], 2, use_posterior=False, noise=noise)
            torch.testing.assert_close(out[b, s], alone.pred[0, 1:].clamp(0, 1), rtol=1e-5, atol=1e-5)
    assert (out[:, 0] - out[:, 1]).abs().max() > 0  # samples differ


def test_gif_and_grid_pixels_are_the_arrays_they_claim_to_show(tmp_path):
    """Each GIF panel and each grid cell holds exactly the frame it is labelled with: the
    prediction panel the model's sample 0, the grid rows the truth, the posterior and each sample."""
    g = torch.Generator().manual_seed(0)
    T, n_past, S, scale = 5, 2, 2, 2

    def frames(*lead):  # 8x8 blocks of 12 colours per frame: few enough for a GIF palette to be exact
        n = int(np.prod(lead))
        colours = torch.randint(0, 256, (n, 12, 3), generator=g).float() / 255
        blocks = torch.randint(0, 12, (n, 8, 8), generator=g)
        img = torch.stack([colours[i][blocks[i]] for i in range(n)])  # (n, 8, 8, 3)
        img = img.permute(0, 3, 1, 2).repeat_interleave(8, -1).repeat_interleave(8, -2)
        return img.reshape(*lead, 3, 64, 64)

    truth, posterior, samples = frames(T), frames(T - 1), frames(S, T - 1)
    pred = {"truth": truth, "posterior": posterior, "samples": samples, "n_past": n_past, "split": "test",
            "index": 0, "actions": None}
    paths = media.write_prediction(pred, tmp_path, scale=scale, grid_scale=scale, mp4=False)

    def cell(img, x, y):  # the 64x64 frame at (x, y), undoing the nearest-neighbour upscaling
        return np.asarray(img)[y : y + 64 * scale : scale, x : x + 64 * scale : scale]

    gif = Image.open(paths["gif"])
    panel_w = 64 * scale + 2 * media.GIF_BORDER
    for t in range(T):
        gif.seek(t)
        frame = gif.convert("RGB")
        y0 = media.GIF_TITLE_H + media.GIF_BORDER
        left = cell(frame, media.GIF_MARGIN + media.GIF_BORDER, y0)
        right = cell(frame, media.GIF_MARGIN + panel_w + media.GIF_MARGIN + media.GIF_BORDER, y0)
        shown = truth[t] if t < n_past else samples[0][t - 1]  # samples predict frames 1..T-1
        np.testing.assert_array_equal(left, media.to_uint8(truth[t]))
        np.testing.assert_array_equal(right, media.to_uint8(shown))
    grid = Image.open(paths["grid"]).convert("RGB")
    rows = [[truth[c] for c in range(T)], [None] + list(posterior)] + [[None] + list(s) for s in samples]
    for r, frames in enumerate(rows):
        for c, frame in enumerate(frames):
            x, y = media.cell_origin(r, c, scale)
            got = cell(grid, x, y)
            if frame is None:
                assert (got == media.EMPTY).all()
            else:
                np.testing.assert_array_equal(got, media.to_uint8(frame))


def test_moving_diversity_by_hand():
    pred = torch.zeros(1, 3, 1, 3, 2, 2)  # (B, S, F, 3, H, W)
    pred[0, 1] = 0.3
    pred[0, 2, :, :, 0, 0] = 0.6  # differs from sample 0 only at pixel (0, 0)
    mask = torch.tensor([[[[True, False], [False, True]]]])  # (B, F, H, W): two moving pixels
    # pairs on the moving pixels: |0 - 0.3| = 0.3; (0, 2): 0.6 on one of two pixels = 0.3;
    # (1, 2): 0.3 and 0.3 = 0.3
    torch.testing.assert_close(ev.moving_diversity(pred, mask), torch.tensor([0.3]))
    assert torch.isnan(ev.moving_diversity(pred[:, :1], mask)).all()  # one sample: no pairs
    assert torch.isnan(ev.moving_diversity(pred, torch.zeros_like(mask))).all()


def test_latent_block_is_computed_from_the_samples_and_the_posterior(run, synth_root, capsys):
    from vidpred.models.svg import rollout
    from vidpred.training.checkpoint import load_model

    res = ev.evaluate_run(run, samples=4, seed=3, progress=False)
    lat, m = res["latent"], res["model"]
    assert lat["samples"] == 4
    for k in ("psnr", "psnr_moving"):
        assert lat["best_of_n_gain_db"][k] == pytest.approx(m[k]["best"]["average"] - m[k]["mean"]["average"],
                                                            abs=1e-5)
        assert lat["best_of_n_gain_db"][k] >= 0
        assert lat["posterior_gain_db"][k] == pytest.approx(lat["posterior"][k] - m[k]["mean"]["average"], abs=1e-5)
    assert lat["diversity_moving"] > 0  # an untrained prior: samples differ
    # the posterior run and its KL, recomputed: z from q, own frames fed back, same noise
    model, cfg, _ = load_model(run)
    ds = open_split(synth_root, "test", window=5)
    frames = torch.stack([ds[i][0] for i in range(len(ds))])
    conds = torch.stack([ds[i][1] for i in range(len(ds))])
    noise = torch.stack([ev.sample_noise(3, i, ev.POSTERIOR_NOISE, (4, cfg.model.z_dim)) for i in range(len(ds))])
    with torch.no_grad():
        r = rollout(model, frames, conds, 2, use_posterior=True, teacher_forcing=False, noise=noise)
    kl = r.kl[:, 1:].float()  # future frames 2..4
    assert lat["kl_per_frame"] == pytest.approx([float(kl.mean())], rel=1e-4)
    assert lat["kl_per_frame_per_step"] == pytest.approx(kl.sum(-1).mean(0).tolist(), rel=1e-4)
    post = r.pred[:, 1:].float().clamp(0, 1)
    assert lat["posterior"]["psnr"] == pytest.approx(float(ev.psnr(post, frames[:, 2:]).mean()), abs=1e-4)
    table = ev.format_table(res)
    assert "best of 4 minus mean sample" in table and "KL(q || p) per predicted frame" in table


def test_best_and_worst_of_n_follow_the_ranking_not_the_sample_order():
    """_pick: first is sample 0, mean the average, best / worst the samples with the highest /
    lowest ranking score of each sequence (not sample 0, not the best frame of any sample)."""
    v = torch.tensor([[[1.0, 2.0], [5.0, 0.0], [3.0, 3.0]],
                      [[4.0, 4.0], [0.0, 9.0], [2.0, 1.0]]])  # (B=2, S=3, F=2)
    order = torch.tensor([[0.0, 1.0, 7.0], [3.0, 5.0, -1.0]])  # best: sample 2, then 1; worst: 0, then 2
    got = ev._pick(v, order)
    torch.testing.assert_close(got["first"], v[:, 0])
    torch.testing.assert_close(got["mean"], v.mean(1))
    torch.testing.assert_close(got["best"], torch.stack([v[0, 2], v[1, 1]]))
    torch.testing.assert_close(got["worst"], torch.stack([v[0, 0], v[1, 2]]))


def test_a_sequence_latent_run_trains_evaluates_and_plans(synth_root, tmp_path, capsys):
    """``model.seq_z`` with free bits through every command: training logs one more KL level,
    evaluation reports it, the planner samples it (its noise is the model's noise_dim wide)."""
    run = train_tiny(synth_root, tmp_path / "seq", ["model.seq_z=3", "train.kl.free_bits=0.5"])
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    levels = [r["kl_levels"] for r in steps if r["kind"] == "step"]
    assert levels and all(len(x) == 2 and x[1] > 0 for x in levels)
    res = ev.evaluate_run(run, samples=2, seed=0, progress=False)
    assert len(res["latent"]["kl_per_frame"]) == 2 and res["latent"]["kl_per_frame"][1] > 0
    assert res["latent"]["sequence_latent"] and "(the last: the sequence latent)" in ev.format_table(res)
    assert main(["plan", str(run), "--episodes", "1", "--steps", "2", "--samples", "4", "--iterations", "1",
                 "--horizon", "2", "--replan-every", "2", "--arms", "model", "--out", str(tmp_path / "p.json"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["model"]["episodes"][0]["steps"] == 2


def test_an_arm_latent_run_trains_evaluates_and_plans(synth_root, tmp_path):
    """``model.arm_latent`` beside a sequence latent through every command: training logs the arm's
    KL after the levels, evaluation reports and labels both, the planner samples the arm's noise."""
    run = train_tiny(synth_root, tmp_path / "arm", ["model.arm_progress=true", "model.arm_latent=true",
                                                    "model.seq_z=2"])
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    levels = [r["kl_levels"] for r in steps if r["kind"] == "step"]
    assert levels and all(len(x) == 3 and x[1] > 0 for x in levels)
    res = ev.evaluate_run(run, samples=2, seed=0, progress=False)
    assert len(res["latent"]["kl_per_frame"]) == 3 and res["latent"]["kl_per_frame"][1] > 0
    assert res["latent"]["arm_latent"] and res["latent"]["sequence_latent"]
    assert "(the last two: the arm's latent and the sequence latent)" in ev.format_table(res)
    assert main(["plan", str(run), "--episodes", "1", "--steps", "2", "--samples", "4", "--iterations", "1",
                 "--horizon", "2", "--replan-every", "2", "--arms", "model", "--out", str(tmp_path / "p.json"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["model"]["episodes"][0]["steps"] == 2
