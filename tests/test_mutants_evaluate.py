"""Unit tests of ``evaluation/evaluate.py`` written against `make mutation` (docs/testing.md).

The aggregation of :func:`evaluate` is checked on hand-made scenes (16x16 frames, a static
table, blocks that move by known amounts, one sequence that does not move at all) with
predictions made up per sample (small errors on the static pixels, others on the moving
ones, so that the whole-frame and the moving-region best / worst are different samples): every
number of the result is recomputed here, PSNR and the moving region in numpy, then the
statistics, the nan-aware means, the rounding, the margins, the latent block and the
per-sequence list. The rollout wrappers run a tiny model against :func:`rollout` called
directly with the documented noise; the JSON, table and what-if helpers are compared with
whole texts and whole messages. All tests together take a few seconds.
"""

import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import vidpred.data
import vidpred.data.synth
import vidpred.training.checkpoint
import vidpred.training.trainer
from vidpred.config import ModelConfig
from vidpred.errors import ConfigError, DataError
from vidpred.evaluation import evaluate as ev
from vidpred.evaluation.metrics import masked_ssim, ssim
from vidpred.models.svg import SVG, rollout

N_PAST, F, S, HW = 2, 3, 3, 16
E_STATIC = [[0.05, 0.02, 0.08], [0.03, 0.06, 0.01], [0.04, 0.045, 0.02]]  # error scale per (sequence, sample)
E_MOVING = [[0.01, 0.2, 0.05], [0.3, 0.02, 0.1], [0.1, 0.1, 0.1]]


def scene():
    """frames (3, 5, 3, 16, 16) and conds (3, 5, 7). Frame 0 differs from frame 1 (observed
    motion, which does not count); after frame 1: sequence 0 moves a block by +0.3 and a pixel by
    +0.2 at frame 2 and another block by -0.15 at frame 3; sequence 1 a block by +0.4 at frame 2;
    sequence 2 never moves."""
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(3, 1, 3, HW, HW, generator=g) * 0.3 + 0.25).repeat(1, N_PAST + F, 1, 1, 1)
    frames[:, 0, 1, 12:15, 12:15] += 0.35
    frames[0, 2, 0, 2:5, 2:5] += 0.3
    frames[0, 2, 1, 10, 10] += 0.2
    frames[0, 3, 2, 5:8, 5:9] -= 0.15
    frames[1, 2, 1, 8:12, 1:4] += 0.4
    return frames, torch.randn(3, N_PAST + F, 7, generator=g)


def made_up_predictions(frames, threshold=0.1):
    """(3, S, F, 3, H, W): the truth plus uniform noise scaled by E_STATIC off and E_MOVING on the moving pixels."""
    g = torch.Generator().manual_seed(1)
    truth = frames[:, N_PAST:]
    m = ((truth - frames[:, N_PAST - 1 : N_PAST]).abs().amax(2, keepdim=True) > 0.1).float()  # (3, F, 1, H, W)
    pred = torch.empty(3, S, F, 3, HW, HW)
    for i in range(3):
        for s in range(S):
            noise = torch.rand(F, 3, HW, HW, generator=g) * 2 - 1
            pred[i, s] = truth[i] + noise * (E_STATIC[i][s] * (1 - m[i]) + E_MOVING[i][s] * m[i])
    return pred


class Scenes:
    def __init__(self, frames, conds):
        self.frames, self.conds = frames, conds

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        return self.frames[i], self.conds[i]

    def sequence_name(self, i):
        return f"traj_0_to_9/{i}"


KL = torch.arange(3 * F * 2, dtype=torch.float32).view(3, F, 2) / 7  # (sequence, step, level)


@pytest.fixture
def fakes(monkeypatch):
    """predict_samples and posterior_run replaced by the made-up predictions; their calls recorded."""
    frames, conds = scene()
    state = types.SimpleNamespace(frames=frames, conds=conds, calls=[], pred=made_up_predictions(frames))
    g = torch.Generator().manual_seed(2)
    state.post = frames[:, N_PAST:] + (torch.rand(3, F, 3, HW, HW, generator=g) - 0.5) * 0.1

    def predict_samples(model, fr, co, n_past, indices, samples, seed, rollout_fn):
        state.calls.append(("samples", fr.clone(), co.clone(), n_past, list(indices), samples, seed, rollout_fn))
        return state.pred[indices][:, :samples]

    def posterior_run(model, fr, co, n_past, indices, seed):
        state.calls.append(("posterior", fr.clone(), co.clone(), n_past, list(indices), seed))
        return state.post[indices], KL[indices]

    monkeypatch.setattr(ev, "predict_samples", predict_samples)
    monkeypatch.setattr(ev, "posterior_run", posterior_run)
    return state


# -- the expected result, computed independently ----------------------------------------------------


def np_psnr(p, t, mask=None):
    """10 log10(1 / MSE), the MSE over channels and pixels (or over channels of the masked pixels); NaN for no pixel."""
    err = (np.asarray(p, np.float64) - np.asarray(t, np.float64)) ** 2  # (3, H, W)
    if mask is not None:
        if not mask.any():
            return float("nan")
        err = err[:, mask]
    return 10 * np.log10(1 / max(err.mean(), 1e-10))


def nanmean(x):
    x = np.asarray(x, np.float64)
    return float("nan") if np.isnan(x).all() else float(np.nanmean(x))


def num(x, digits=6):
    return None if not np.isfinite(x) else round(float(x), digits)


def expected_result(frames, pred, post, kl, threshold=0.1):
    n, samples = len(frames), pred.shape[1]
    truth, last = frames[:, N_PAST:], frames[:, N_PAST - 1]
    mask = np.stack([[(truth[i, f] - last[i]).abs().amax(0).numpy() > threshold for f in range(F)] for i in range(n)])
    scores = {"psnr": np.zeros((n, samples, F)), "psnr_moving": np.zeros((n, samples, F))}
    for i in range(n):
        for s in range(samples):
            for f in range(F):
                scores["psnr"][i, s, f] = np_psnr(pred[i, s, f], truth[i, f])
                scores["psnr_moving"][i, s, f] = np_psnr(pred[i, s, f], truth[i, f], mask[i, f])
    target = truth.unsqueeze(1).expand_as(pred)
    scores["ssim"] = ssim(pred, target).double().numpy()
    scores["ssim_moving"] = masked_ssim(pred, target, torch.from_numpy(mask).unsqueeze(1)).double().numpy()
    rank = {"psnr": scores["psnr"].mean(-1),
            "psnr_moving": np.array([[nanmean(scores["psnr_moving"][i, s]) for s in range(samples)] for i in range(n)])}
    picks = {}
    for m, v in scores.items():
        r = rank["psnr_moving" if "moving" in m else "psnr"]
        best = [int(np.argmax(r[i])) if not np.isnan(r[i]).all() else 0 for i in range(n)]
        worst = [int(np.argmin(r[i])) if not np.isnan(r[i]).all() else 0 for i in range(n)]
        picks[m] = {"first": v[:, 0], "mean": v.mean(1), "best": v[np.arange(n), best], "worst": v[np.arange(n), worst]}
    base = last.unsqueeze(1).expand_as(truth)
    copy = {"psnr": np.array([[np_psnr(base[i, f], truth[i, f]) for f in range(F)] for i in range(n)]),
            "psnr_moving": np.array([[np_psnr(base[i, f], truth[i, f], mask[i, f]) for f in range(F)] for i in range(n)]),
            "ssim": ssim(base, truth).double().numpy(),
            "ssim_moving": masked_ssim(base, truth, torch.from_numpy(mask)).double().numpy()}
    posterior = {"psnr": np.array([[np_psnr(post[i, f], truth[i, f]) for f in range(F)] for i in range(n)]),
                 "psnr_moving": np.array([[np_psnr(post[i, f], truth[i, f], mask[i, f]) for f in range(F)]
                                          for i in range(n)]),
                 "ssim": ssim(post, truth).double().numpy(),
                 "ssim_moving": masked_ssim(post, truth, torch.from_numpy(mask)).double().numpy()}

    def whole(x):
        return {"per_step": [round(float(v), 6) for v in x.mean(0)], "average": round(float(x.mean()), 6)}

    def moving(x):
        return {"per_step": [num(nanmean(x[:, f])) for f in range(F)], "average": num(nanmean(x))}

    result = {"model": {}, "copy_last": {}}
    for m in ("psnr", "ssim", "psnr_moving", "ssim_moving"):
        stat = moving if "moving" in m else whole
        result["model"][m] = {k: stat(picks[m][k]) for k in ("first", "mean", "best", "worst")}
        result["copy_last"][m] = stat(copy[m])
    model, copy_ = result["model"], result["copy_last"]
    result["psnr_margin_db"] = round(model["psnr"]["mean"]["average"] - copy_["psnr"]["average"], 6)
    mm = model["psnr_moving"]["mean"]["average"]
    result["psnr_moving_margin_db"] = None if mm is None else round(mm - copy_["psnr_moving"]["average"], 6)
    result["motion_threshold"] = threshold
    fraction = mask.mean(axis=(-2, -1))  # (n, F)
    result["moving_fraction"] = num(fraction.mean())
    result["moving_fraction_per_step"] = [num(x) for x in fraction.mean(0)]
    result["frames_without_motion"] = int((fraction == 0).sum())
    result["per_sequence"] = [
        {"name": f"traj_0_to_9/{i}", "psnr_first": round(float(picks["psnr"]["first"][i].mean()), 4),
         "psnr_mean": round(float(picks["psnr"]["mean"][i].mean()), 4),
         "psnr_best": round(float(picks["psnr"]["best"][i].mean()), 4),
         "psnr_copy_last": round(float(copy["psnr"][i].mean()), 4),
         "psnr_moving_mean": num(nanmean(picks["psnr_moving"]["mean"][i]), 4),
         "psnr_moving_copy_last": num(nanmean(copy["psnr_moving"][i]), 4),
         "moving_fraction": num(fraction[i].mean())} for i in range(n)]
    gain = lambda a, b: None if a is None or b is None else round(a - b, 6)  # noqa: E731
    post_avg = {"psnr": round(float(posterior["psnr"].mean()), 6), "ssim": round(float(posterior["ssim"].mean()), 6),
                "psnr_moving": num(nanmean(posterior["psnr_moving"])),
                "ssim_moving": num(nanmean(posterior["ssim_moving"]))}
    diversity = []
    for i in range(n):
        m = torch.from_numpy(mask[i]).float()  # (F, H, W)
        if samples < 2 or not mask[i].any():
            diversity.append(float("nan"))
            continue
        pairs = [float(((pred[i, a] - pred[i, b]).abs() * m[:, None]).sum() / (m.sum() * 3))
                 for a in range(samples) for b in range(a + 1, samples)]
        diversity.append(sum(pairs) / len(pairs))
    kl = kl.double()
    result["latent"] = {
        "samples": samples,
        "best_of_n_gain_db": {m: gain(model[m]["best"]["average"], model[m]["mean"]["average"])
                              for m in ("psnr", "psnr_moving")},
        "posterior": post_avg,
        "posterior_gain_db": {m: gain(post_avg[m], model[m]["mean"]["average"]) for m in ("psnr", "psnr_moving")},
        "diversity_moving": num(nanmean(diversity)),
        "kl_per_frame": [round(float(kl[..., level].mean()), 6) for level in range(kl.shape[-1])],
        "kl_per_frame_per_step": [round(float(kl[:, f].sum(-1).mean()), 6) for f in range(F)],
        "sequence_latent": False,  # the stand-in model has no model.seq_z
        "arm_latent": False,  # nor model.arm_latent
    }
    result["n_sequences"] = n
    return result


def assert_same(got, want, path="result"):
    """The same structure, key order and types; numbers within float32 rounding."""
    if isinstance(want, dict):
        assert list(got) == list(want), path
        for k in want:
            assert_same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"{path}[{i}]")
    elif want is None:
        assert got is None, (path, got)
    elif isinstance(want, float):
        assert type(got) is float and got == pytest.approx(want, abs=2e-4), (path, got, want)
    else:
        assert type(got) is type(want) and got == want, (path, got, want)


def assert_rounded(result):
    """Every float rounded to 6 decimals (4 for the per-sequence PSNRs), and not to fewer: per
    field, some value has a non-zero last decimal."""
    groups = {}

    def walk(x, key, digits):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, k, 4 if k.startswith("psnr") and key == "per_sequence" else digits)
        elif isinstance(x, list):
            for v in x:
                walk(v, key, digits)
        elif isinstance(x, float):
            assert x == round(x, digits), (key, x, digits)
            groups.setdefault((key, digits), []).append(x)

    walk(result, "result", 6)
    for (key, digits), values in groups.items():
        if key != "motion_threshold":
            assert any(v != round(v, digits - 1) for v in values), (key, values)


# -- evaluate() ---------------------------------------------------------------------------------------


def test_every_number_of_an_evaluation_from_the_samples(fakes, capsys, stand_in_model):
    model = stand_in_model
    result = ev.evaluate(model, Scenes(fakes.frames, fakes.conds), N_PAST, samples=S, seed=11, batch_size=2,
                         progress=True)
    want = expected_result(fakes.frames, fakes.pred, fakes.post, KL)
    assert_same(result, want)
    assert_rounded(result)
    # the scene was made for these: the picks differ, a step and a sequence without motion
    assert result["model"]["psnr_moving"]["first"]["per_step"][2] is None
    assert result["frames_without_motion"] == 6 and result["per_sequence"][2]["psnr_moving_mean"] is None
    assert result["model"]["psnr"]["best"] != result["model"]["psnr"]["first"] != result["model"]["psnr"]["worst"]
    assert result["model"]["psnr_moving"]["best"]["average"] > result["model"]["psnr_moving"]["mean"]["average"]
    # two batches of at most 2 sequences, the model's samples and the posterior run of each
    assert [(c[0], c[4]) for c in fakes.calls] == [("samples", [0, 1]), ("posterior", [0, 1]),
                                                   ("samples", [2]), ("posterior", [2])]
    for c in fakes.calls:
        torch.testing.assert_close(c[1], fakes.frames[c[4]], rtol=0, atol=0)
        torch.testing.assert_close(c[2], fakes.conds[c[4]], rtol=0, atol=0)
        assert c[3] == N_PAST
        if c[0] == "samples":
            assert (c[5], c[6]) == (S, 11)
            fn = c[7]
            assert isinstance(fn, ev.CompiledOrEager if hasattr(ev, "CompiledOrEager") else object)
            assert (fn.fn.__name__, fn.what, fn.compiled) == ("rollout", "evaluate", None)
        else:
            assert c[5] == 11
    err = capsys.readouterr().err
    assert re.fullmatch(r"evaluate: 100%\|.*\| 9/9 \[.*(sample/s|s/sample)\]", err.replace("\n", "\r").strip("\r").split("\r")[-1])


def test_the_motion_threshold_and_one_sample(fakes, capsys, stand_in_model):
    model = stand_in_model
    result = ev.evaluate(model, Scenes(fakes.frames, fakes.conds), N_PAST, samples=1, motion_threshold=0.25)
    assert capsys.readouterr().err == ""  # progress None: no bar where stderr is no terminal
    want = expected_result(fakes.frames, fakes.pred[:, :1], fakes.post, KL, threshold=0.25)
    assert_same(result, want)
    assert result["motion_threshold"] == 0.25 and result["latent"]["diversity_moving"] is None
    assert result["moving_fraction"] == round((9 + 12) / (3 * 3 * 256), 6)  # the +0.2 pixel and the -0.15 block left out
    assert [c[6] for c in fakes.calls if c[0] == "samples"] == [0]  # seed 0 by default, one batch of 16


def test_max_sequences_and_bad_arguments(fakes, capsys, stand_in_model):
    model = stand_in_model
    ds = Scenes(fakes.frames, fakes.conds)
    assert ev.evaluate(model, ds, N_PAST, samples=2, max_sequences=2, progress=False)["n_sequences"] == 2
    assert [c[4] for c in fakes.calls] == [[0, 1], [0, 1]]
    assert ev.evaluate(model, ds, N_PAST, samples=2, max_sequences=7, progress=True)["n_sequences"] == 3
    assert "| 6/6 [" in capsys.readouterr().err  # 3 sequences x 2 samples
    assert ev.evaluate(model, ds, N_PAST, samples=1, batch_size=1, max_sequences=1, progress=False)["n_sequences"] == 1
    assert capsys.readouterr().err == ""
    for kwargs, message in [(dict(samples=0), "--samples must be >= 1, got 0"),
                            (dict(batch_size=0), "--batch-size must be >= 1, got 0"),
                            (dict(max_sequences=0), "--max-sequences must be >= 1, got 0"),
                            (dict(motion_threshold=1.0), "--motion-threshold must be > 0 and < 1 (frames are in [0, 1]), "
                                                         "got 1.0")]:
        with pytest.raises(ConfigError) as err:
            ev.evaluate(model, ds, N_PAST, **kwargs)
        assert str(err.value) == message


def test_compile_passes_the_rollout_through_torch_compile(fakes, monkeypatch, stand_in_model):
    made = []

    class Recorder:
        def __init__(self, fn, enabled, device, what):
            made.append((fn, enabled, device, what))

    import vidpred.runtime

    monkeypatch.setattr(vidpred.runtime, "CompiledOrEager", Recorder)
    ev.evaluate(stand_in_model, Scenes(fakes.frames, fakes.conds), N_PAST, samples=1, compile=True,
                progress=False)
    assert made == [(rollout, True, torch.device("cpu"), "evaluate")]
    assert fakes.calls[0][7] is not None and isinstance(fakes.calls[0][7], Recorder)


# -- the pieces -------------------------------------------------------------------------------------


def test_sample_noise_is_keyed_by_seed_sequence_and_sample():
    key = int(np.random.default_rng([3, 14, 2, 0xE7A1]).integers(2**62))
    want = torch.randn((4, 5), generator=torch.Generator().manual_seed(key))
    torch.testing.assert_close(ev.sample_noise(3, 14, 2, (4, 5)), want, rtol=0, atol=0)
    assert ev.POSTERIOR_NOISE == 2**31 - 1


def test_copy_last_repeats_the_last_observed_frame():
    frames = torch.arange(2 * 5 * 3 * 2 * 2, dtype=torch.float32).view(2, 5, 3, 2, 2)
    got = ev.copy_last(frames, 2)
    assert got.shape == (2, 3, 3, 2, 2)
    for f in range(3):
        torch.testing.assert_close(got[:, f], frames[:, 1])


def test_resolve_horizon_defaults_and_limits():
    cfg = types.SimpleNamespace(train=types.SimpleNamespace(n_past=2, n_future=10))
    assert ev.resolve_horizon(cfg, None, None) == (2, 10)
    assert ev.resolve_horizon(cfg, "3", 27.0) == (3, 27)
    assert ev.resolve_horizon(cfg, 1, 1) == (1, 1)
    assert ev.resolve_horizon(cfg, 29, 1) == (29, 1) and ev.resolve_horizon(cfg, 20, None) == (20, 10)
    for args, message in [((0, 5), "--n-past and --n-future must be >= 1, got 0 and 5"),
                          ((2, 0), "--n-past and --n-future must be >= 1, got 2 and 0"),
                          ((21, None), "--n-past + --n-future must be <= 30 (sequence length), got 31")]:
        with pytest.raises(ConfigError) as err:
            ev.resolve_horizon(cfg, *args)
        assert str(err.value) == message


def test_motion_threshold_check():
    assert ev.check_motion_threshold("0.5") == 0.5 and type(ev.check_motion_threshold(0.5)) is float
    assert ev.check_motion_threshold(1e-9) == 1e-9 and ev.check_motion_threshold(0.999) == 0.999
    for bad in (0, 1, -0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError) as err:
            ev.check_motion_threshold(bad)
        assert str(err.value) == f"--motion-threshold must be > 0 and < 1 (frames are in [0, 1]), got {float(bad)}"


def test_number_rounds_and_says_null_for_nothing():
    assert ev._number(1.23456789) == 1.234568 and ev._number(torch.tensor(2.5)) == 2.5
    assert ev._number(1.23456789, 2) == 1.23
    assert ev._number(float("nan")) is None and ev._number(float("inf")) is None


def test_pick_with_a_sequence_that_has_no_ranking():
    v = torch.tensor([[[1.0], [2.0]], [[float("nan")], [float("nan")]]])
    order = torch.tensor([[0.5, 0.2], [float("nan"), float("nan")]])
    got = ev._pick(v, order)
    assert got["best"][0].item() == 1.0 and got["worst"][0].item() == 2.0
    assert torch.isnan(got["best"][1]).all() and got["mean"][0].item() == 1.5


def test_moving_diversity_over_all_pairs_and_channels():
    pred = torch.zeros(2, 3, 2, 2, 1, 2)  # (B, S, F, C=2, H=1, W=2)
    pred[0, 1, 0, 0, 0, 0] = 0.6   # sample 1, frame 0, channel 0, pixel 0
    pred[0, 2, 1, 1, 0, 1] = 0.3   # sample 2, frame 1, channel 1, pixel 1 (not moving)
    pred[1, 0] = 0.2
    mask = torch.tensor([[[[True, False]], [[False, False]]], [[[True, True]], [[True, True]]]])  # (B, F, H, W)
    # sequence 0: 1 moving pixel x 2 channels; pairs (0,1): 0.6 / 2, (0,2): 0, (1,2): 0.6 / 2 -> mean 0.2
    # sequence 1: sample 0 differs by 0.2 everywhere: pairs (0,1), (0,2): 0.2, (1,2): 0 -> 0.4 / 3
    torch.testing.assert_close(ev.moving_diversity(pred, mask), torch.tensor([0.2, 0.4 / 3]))
    mask[0] = False
    got = ev.moving_diversity(pred, mask)
    assert torch.isnan(got[0]) and got[1].item() == pytest.approx(0.4 / 3)
    assert torch.isnan(ev.moving_diversity(pred[:, :1], mask)).all() and ev.moving_diversity(pred[:, :1], mask).shape == (2,)
    # one channel, one moving pixel: the difference itself
    one = torch.zeros(1, 2, 1, 1, 1, 2)
    one[0, 1, 0, 0, 0, 0] = 0.7
    torch.testing.assert_close(ev.moving_diversity(one, torch.tensor([[[[True, False]]]])), torch.tensor([0.7]))


def tiny_model():
    """A few channels wide, with random weights large enough for the latent and the fed-back frames to matter."""
    torch.manual_seed(0)
    model = SVG(ModelConfig(width=2, g_dim=4, z_dim=2, rnn_size=4, cond_embed=2, predictor_layers=1, levels=2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


def test_predict_samples_batch_each_sample_as_its_own_rollout(monkeypatch):
    model = tiny_model()
    g = torch.Generator().manual_seed(3)
    frames, conds = torch.rand(2, 5, 3, 64, 64, generator=g), torch.randn(2, 5, 7, generator=g)
    calls = []

    def recording(*args, **kwargs):
        calls.append(args[1].shape[0])
        return rollout(*args, **kwargs)

    monkeypatch.setattr(ev, "ROLLOUT_BATCH", 5)  # 2 sequences: 2 samples per chunk, then 1
    got = ev.predict_samples(model, frames, conds, 2, [4, 8], 3, seed=6, rollout_fn=recording)
    assert calls == [4, 2] and got.shape == (2, 3, 3, 3, 64, 64)
    for b, index in enumerate([4, 8]):
        for s in range(3):
            noise = ev.sample_noise(6, index, s, (4, 4)).unsqueeze(0)
            alone = rollout(model, frames[b : b + 1, :2], conds[b : b + 1], 2, use_posterior=False, noise=noise)
            torch.testing.assert_close(got[b, s], alone.pred[0, 1:].clamp(0, 1), rtol=1e-5, atol=1e-6)
    assert got.min() >= 0 and got.max() <= 1
    monkeypatch.setattr(ev, "ROLLOUT_BATCH", 1)  # fewer than the sequences: one sample per chunk
    torch.testing.assert_close(ev.predict_samples(model, frames, conds, 2, [4, 8], 3, seed=6), got,
                               rtol=1e-5, atol=1e-6)


def test_posterior_run_and_its_kl():
    model = tiny_model()
    g = torch.Generator().manual_seed(4)
    frames, conds = torch.rand(2, 5, 3, 64, 64, generator=g), torch.randn(2, 5, 7, generator=g)
    post, kl = ev.posterior_run(model, frames, conds, 3, [7, 1], seed=2)
    noise = torch.stack([ev.sample_noise(2, i, 2**31 - 1, (4, 4)) for i in (7, 1)])
    r = rollout(model, frames, conds, 3, use_posterior=True, teacher_forcing=False, noise=noise)
    torch.testing.assert_close(post, r.pred[:, 2:].clamp(0, 1))
    torch.testing.assert_close(kl, r.kl[:, 2:])
    assert post.shape == (2, 2, 3, 64, 64) and kl.shape == (2, 2, 2)
    forced = rollout(model, frames, conds, 3, use_posterior=True, teacher_forcing=True, noise=noise)
    assert (forced.pred[:, 2:] - r.pred[:, 2:]).abs().max() > 1e-6  # the free run is not the teacher-forced one


def test_predict_sequence_truth_posterior_and_samples():
    model = tiny_model()
    g = torch.Generator().manual_seed(5)
    frames, conds = torch.rand(5, 3, 64, 64, generator=g), torch.randn(5, 7, generator=g)
    got = ev.predict_sequence(model, frames, conds, 2, index=9, samples=2, seed=3)
    assert list(got) == ["truth", "posterior", "samples"]
    torch.testing.assert_close(got["truth"], frames)
    assert got["truth"].dtype == torch.float32
    x, c = frames.unsqueeze(0), conds.unsqueeze(0)
    post = rollout(model, x.float(), c, 2, use_posterior=True, teacher_forcing=True,
                   noise=ev.sample_noise(3, 9, ev.POSTERIOR_NOISE, (4, 4)).unsqueeze(0))
    torch.testing.assert_close(got["posterior"], post.pred[0].float().clamp(0, 1), rtol=1e-4, atol=1e-5)
    for s in range(2):
        r = rollout(model, x[:, :2].float(), c, 2, use_posterior=False, noise=ev.sample_noise(3, 9, s, (4, 4)).unsqueeze(0))
        torch.testing.assert_close(got["samples"][s], r.pred[0].clamp(0, 1), rtol=1e-4, atol=1e-5)
    assert got["samples"].shape == (2, 4, 3, 64, 64)


# -- files and text -----------------------------------------------------------------------------------


def test_default_output_write_and_read_json(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"")
    assert ev.default_output(run, "test") == run / "eval_test.json"
    assert ev.default_output(str(run / "best.pt"), "validate") == run / "eval_validate.json"
    result = {"format": ev.FORMAT, "x": [1.5, None]}
    path = ev.write_json(result, str(tmp_path / "a" / "b" / "e.json"))
    assert path == tmp_path / "a" / "b" / "e.json" and isinstance(path, Path)
    assert path.read_text() == '{\n "format": "vidpred-eval-1",\n "x": [\n  1.5,\n  null\n ]\n}\n'
    assert ev.read_json(str(path)) == result
    assert ev.write_json({"format": ev.FORMAT}, path.parent / "f.json").read_text() == '{\n "format": "vidpred-eval-1"\n}\n'
    for text in ('{"format": "other"}', "[1]", "{}"):
        path.write_text(text)
        with pytest.raises(DataError) as err:
            ev.read_json(path)
        assert str(err.value) == f"{path}: not a vidpred evaluation (expected format vidpred-eval-1)"
    with pytest.raises(DataError) as err:
        ev.read_json(tmp_path / "none.json")
    assert str(err.value) == f"{tmp_path}/none.json: evaluation file not found"


def table_result(moving=True, fraction=0.0123, margin=-1.5, latent=True):
    def s(values, avg):
        return {"per_step": values, "average": avg}

    r = {"format": ev.FORMAT, "split": "test", "data_root": "/d", "n_sequences": 4, "n_samples": 2, "n_past": 2,
         "n_future": 2, "seed": 7, "checkpoint": "/r/best.pt",
         "model": {"psnr": {"first": s([20.0, 19.5], 19.75), "mean": s([21.0, 20.25], 20.625),
                            "best": s([22.125, 21.0], 21.5625), "worst": s([18.0, 17.0], 17.5)},
                   "ssim": {"first": s([0.9, 0.8], 0.85), "mean": s([0.91, 0.81], 0.86),
                            "best": s([0.95, 0.9], 0.925), "worst": s([0.5, 0.25], 0.375)}},
         "copy_last": {"psnr": s([18.5, 16.0], 17.25), "ssim": s([0.7, 0.6], 0.65)},
         "psnr_margin_db": 3.375}
    if moving:
        r["model"]["psnr_moving"] = {k: s([12.5, None], 12.5) for k in ev.STATS}
        r["model"]["ssim_moving"] = {k: s([0.4, None], 0.4) for k in ev.STATS}
        r["copy_last"]["psnr_moving"] = s([14.0, None], 14.0)
        r["copy_last"]["ssim_moving"] = s([None, None], None)
        r.update(motion_threshold=0.25, moving_fraction=fraction, psnr_moving_margin_db=margin)
    if latent:
        r["latent"] = {"samples": 2, "best_of_n_gain_db": {"psnr": 0.9375, "psnr_moving": None},
                       "posterior_gain_db": {"psnr": -0.25, "psnr_moving": 1.0}, "diversity_moving": 0.01234,
                       "kl_per_frame": [0.5, 0.0001234], "kl_per_frame_per_step": [0.1, 0.2]}
    return r


HEAD = " " * 22 + "t=3    t=4     avg"


def test_the_table_line_by_line():
    want = [
        "test split of /d: 4 sequences x 2 samples, 2 -> 2 frames, seed 7",
        "checkpoint /r/best.pt",
        "moving region: pixels whose true value differs from the last observed frame by more than 0.25 (some "
        "channel); 1.2% of the future pixels",
        "", "PSNR (dB)", HEAD,
        "  first             20.00  19.50   19.75",
        "  mean              21.00  20.25   20.62",
        "  best              22.12  21.00   21.56",
        "  worst             18.00  17.00   17.50",
        "  copy-last         18.50  16.00   17.25",
        "", "SSIM", HEAD,
        "  first             0.900  0.800   0.850",
        "  mean              0.910  0.810   0.860",
        "  best              0.950  0.900   0.925",
        "  worst             0.500  0.250   0.375",
        "  copy-last         0.700  0.600   0.650",
        "", "PSNR moving region (dB)", HEAD,
        *[f"  {k:16s}  12.50    n/a   12.50" for k in ev.STATS],
        "  copy-last         14.00    n/a   14.00",
        "", "SSIM moving region", HEAD,
        *[f"  {k:16s}  0.400    n/a   0.400" for k in ev.STATS],
        "  copy-last           n/a    n/a     n/a",
        "", "mean-sample PSNR minus copy-last: +3.38 dB",
        "mean-sample PSNR minus copy-last, moving region: -1.50 dB",
        "", "latent",
        "  best of 2 minus mean sample: +0.94 dB whole frame, n/a dB moving region",
        "  posterior (z inferred from the true future) minus mean sample: -0.25 dB whole frame, +1.00 dB moving region",
        "  sample diversity on the moving pixels: 0.0123 (mean |difference| between two samples)",
        "  KL(q || p) per predicted frame, per level: 0.5, 0.000123 nats",
    ]
    assert ev.format_table(table_result()).split("\n") == want


def test_the_table_without_numbers_it_cannot_give():
    lines = ev.format_table(table_result(fraction=None, margin=None)).split("\n")
    assert lines[2].endswith("by more than 0.25 (some channel); n/a")
    assert lines[-7] == "mean-sample PSNR minus copy-last, moving region: n/a"
    old = ev.format_table(table_result(moving=False, latent=False)).split("\n")
    assert old[2] == "moving region: n/a (evaluation written before the moving-region metrics)"
    assert "PSNR moving region (dB)" not in old and len(old) == 3 + 2 * 8 + 3
    assert old[-2:] == ["mean-sample PSNR minus copy-last: +3.38 dB",
                        "mean-sample PSNR minus copy-last, moving region: n/a"]
    half = table_result(latent=False)
    del half["model"]["ssim_moving"]  # both moving metrics are needed
    assert ev.format_table(half).split("\n")[2].startswith("moving region: n/a")
    assert ev.format_latent(None) == [] and ev.format_latent({}) == []
    lat = table_result()["latent"]
    lat["diversity_moving"] = None
    assert ev.format_latent(lat)[4] == "  sample diversity on the moving pixels: n/a (mean |difference| between two samples)"
    assert ev._cell("{:7.2f}", None) == "    n/a" and ev._cell("{:9.3f}", 1.0) == "    1.000"


def write_csv(path, rows):
    path.write_text("".join(",".join(f"{v:g}" for v in row) + "\n" for row in rows))
    return path


def test_read_actions_replaces_only_the_future(tmp_path):
    conds = torch.arange(5 * 7, dtype=torch.float32).view(5, 7) / 10
    table = np.arange(6 * 7).reshape(6, 7) * -1.0 - 1  # 6 rows: more than the window needs
    got = ev.read_actions(write_csv(tmp_path / "a.csv", table[:, :4]), conds, n_past=3, action_lag=1)
    want = conds.clone()
    want[2:, :4] = torch.from_numpy(table[2:5, :4]).float()  # actions from row n_past - lag
    torch.testing.assert_close(got, want)
    got = ev.read_actions(write_csv(tmp_path / "b.csv", table), conds, n_past=2, action_lag=0)
    want = conds.clone()
    want[2:] = torch.from_numpy(table[2:5]).float()
    torch.testing.assert_close(got, want)
    got = ev.read_actions(write_csv(tmp_path / "c.csv", table[:5]), conds, n_past=1, action_lag=3)
    want = conds.clone()
    want[:, :4] = torch.from_numpy(table[:5, :4]).float()
    want[1:, 4:] = torch.from_numpy(table[1:5, 4:]).float()
    torch.testing.assert_close(got, want)
    (tmp_path / "blank.csv").write_text("\n\n" + "1,2,3,4\n" * 5)
    assert ev.read_actions(tmp_path / "blank.csv", conds)[0, :4].tolist() == [1, 2, 3, 4]
    torch.testing.assert_close(ev.read_actions(tmp_path / "blank.csv", conds)[:, 4:], conds[:, 4:])
    got = ev.read_actions(tmp_path / "blank.csv", conds, n_past=2)  # the default lag is 0: from row 2
    torch.testing.assert_close(got[:2], conds[:2])
    assert got[2, :4].tolist() == [1, 2, 3, 4]


def test_read_actions_errors(tmp_path):
    conds = torch.zeros(5, 7)
    cases = [(tmp_path / "none.csv", None, "file not found"),
             (tmp_path / "bin.csv", b"\xff\xfe\x00", "cannot read as text (UnicodeDecodeError)"),
             (tmp_path / "dir.csv", "dir", "cannot read as text (IsADirectoryError)"),
             (tmp_path / "five.csv", "1,2,3,4,5\n" * 5, "expected 4 columns (actions) or 7 (actions and end-effector "
                                                     "positions), got 5"),
             (tmp_path / "empty.csv", "\n \n", "expected 4 columns (actions) or 7 (actions and end-effector "
                                               "positions), got 0"),
             (tmp_path / "short.csv", "1,2,3,4\n" * 3, "expected at least 5 rows (one per step of the window), got 3")]
    for path, content, message in cases:
        if content == "dir":
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(DataError) as err:
            ev.read_actions(str(path), conds)
        assert str(err.value) == f"{path}: {message}"


@pytest.fixture
def fake_synth(monkeypatch):
    calls = []
    info = {"params": {"seed": 5, "hidden_causes": 1}}

    def read_info(root):
        calls.append(("read_info", str(root)))
        return info["value"] if "value" in info else info

    def scripted_actions(seed, split, index, hidden, release):
        assert release == info.get("value", info)["params"].get("release", 0.0)
        calls.append(("scripted", seed, split, index, hidden))
        return np.full((30, 4), -1.0)

    def replay(seed, split, index, actions, hidden, release):
        assert release == info.get("value", info)["params"].get("release", 0.0)
        calls.append(("replay", seed, split, index, np.array(actions), hidden))
        frames = np.zeros((len(actions), 2, 3, 3), np.uint8)
        frames[:, 1, 2, 0] = 255
        frames[:, 0, 0, 2] = np.arange(len(actions)) + 1
        return {"frames": frames}

    monkeypatch.setattr(vidpred.data.synth, "read_info", read_info)
    monkeypatch.setattr(vidpred.data.synth, "scripted_actions", scripted_actions)
    monkeypatch.setattr(vidpred.data.synth, "replay", replay)
    return types.SimpleNamespace(calls=calls, info=info)


def test_simulated_whatif_replays_recorded_then_new_actions(fake_synth):
    conds = torch.arange(9 * 7, dtype=torch.float32).view(9, 7)  # more steps than numbers per step
    frames = ev.simulated_whatif("/root", "test", "traj_256_to_511/3", conds, n_past=2)
    [(_, root), (_, *scripted), (_, seed, split, index, actions, hidden)] = fake_synth.calls
    assert root == "/root" and scripted == [5, "test", 259, True] and (seed, split, index, hidden) == (5, "test", 259, True)
    np.testing.assert_array_equal(actions, np.concatenate([np.full((2, 4), -1.0), conds[2:, :4].double().numpy()]))
    assert frames.shape == (9, 3, 2, 3) and frames.dtype == torch.float32  # (T, 3, H, W)
    assert frames[0, 0, 1, 2] == 1.0 and frames[3, 2, 0, 0].item() == pytest.approx(4 / 255)
    assert frames.sum().item() == pytest.approx(9 * 1.0 + sum(range(1, 10)) / 255)
    ev.simulated_whatif("/root", "test", "x/traj_256_to_511/3", conds, n_past=2)  # k is after the last slash
    assert fake_synth.calls[-1][3] == 259
    fake_synth.info["params"]["hidden_causes"] = 0
    ev.simulated_whatif("/root", "test", "traj_0_to_255/0", conds[:3], n_past=1)
    assert fake_synth.calls[-1][3] == 0 and fake_synth.calls[-1][5] is False and len(fake_synth.calls[-1][4]) == 3
    del fake_synth.info["params"]["hidden_causes"]
    ev.simulated_whatif("/root", "test", "traj_0_to_255/0", conds, n_past=1)
    assert fake_synth.calls[-1][5] is False
    fake_synth.info["params"]["release"] = 0.5  # the fakes check that both calls get it
    ev.simulated_whatif("/root", "test", "traj_0_to_255/0", conds, n_past=1)
    assert [c[0] for c in fake_synth.calls[-2:]] == ["scripted", "replay"]


def test_simulated_whatif_errors_and_other_data(fake_synth):
    conds = torch.zeros(4, 7)
    for name in ("seq7", "traj/3", "traj_x_to_y/3", "traj_1_to_2/x"):
        with pytest.raises(DataError) as err:
            ev.simulated_whatif("/root", "test", name, conds, 2)
        assert str(err.value) == (f"/root/test: sequence name {name!r} is not traj_<a>_to_<b>/<k>, so the simulator "
                                  f"cannot re-run it")
    fake_synth.info["params"]["seed"] = "5"
    with pytest.raises(DataError) as err:
        ev.simulated_whatif("/root", "test", "traj_0_to_1/0", conds, 2)
    assert str(err.value) == "/root/synth.json: params.seed must be an integer, got '5'"
    fake_synth.info["params"]["seed"] = 5
    fake_synth.info["params"]["release"] = 2
    with pytest.raises(DataError) as err:
        ev.simulated_whatif("/root", "test", "traj_0_to_1/0", conds, 2)
    assert str(err.value) == "/root/synth.json: params.release must be a share of push plans in [0, 1], got 2"
    fake_synth.info["value"] = None
    assert ev.simulated_whatif("/root", "test", "anything", conds, 2) is None


class Loaded:
    """What load_model, open_split and resolve_device were asked."""

    def __init__(self, monkeypatch, n=3, action_lag=1):
        self.calls = []
        self.model = torch.nn.Linear(1, 1)
        self.model.cfg = ModelConfig()  # evaluate reads the loaded model's config
        self.cfg = types.SimpleNamespace(train=types.SimpleNamespace(n_past=2, n_future=3),
                                         data=types.SimpleNamespace(root="/cfg/data", use_cache=False),
                                         model=types.SimpleNamespace(action_lag=action_lag))
        frames, conds = scene()
        self.ds = Scenes(frames, conds)
        self.ds.frames = self.ds.frames[:n]

        def load_model(run, device):
            self.calls.append(("load_model", run, device))
            return self.model, self.cfg, Path("/r/best.pt")

        def open_split(root, split, **kwargs):
            self.calls.append(("open_split", root, split, kwargs))
            return self.ds

        def resolve_device(name):
            self.calls.append(("device", name))
            return torch.device("cpu")

        monkeypatch.setattr(vidpred.training.checkpoint, "load_model", load_model)
        monkeypatch.setattr(vidpred.data, "open_split", open_split)
        monkeypatch.setattr(vidpred.training.trainer, "resolve_device", resolve_device)


def test_evaluate_run_head_and_arguments(monkeypatch):
    loaded = Loaded(monkeypatch)
    seen = []

    def evaluate(model, ds, n_past, **kwargs):
        seen.append((model, ds, n_past, kwargs))
        return {"model": 1, "n_sequences": 3, "latent": 2}

    monkeypatch.setattr(ev, "evaluate", evaluate)
    got = ev.evaluate_run("runs/a", split="validate", samples=4, seed=9, n_future=4, batch_size=3, max_sequences=2,
                          device="cpu", progress=False, motion_threshold=0.2, compile=True)
    assert got == {"format": "vidpred-eval-1", "run": "runs/a", "checkpoint": "/r/best.pt", "data_root": "/cfg/data",
                   "split": "validate", "n_past": 2, "n_future": 4, "n_sequences": 3, "n_samples": 4, "seed": 9,
                   "best_of": ev.BEST_OF, "model": 1, "latent": 2}
    assert list(got)[:11] == ["format", "run", "checkpoint", "data_root", "split", "n_past", "n_future", "n_sequences",
                              "n_samples", "seed", "best_of"]
    assert loaded.calls == [("device", "cpu"), ("load_model", Path("runs/a"), torch.device("cpu")),
                            ("open_split", "/cfg/data", "validate", dict(window=6, random_start=False, use_cache=False))]
    assert seen == [(loaded.model, loaded.ds, 2, dict(samples=4, seed=9, batch_size=3, max_sequences=2, progress=False,
                                                       motion_threshold=0.2, compile=True))]
    assert ev.evaluate_run("runs/a", n_past=3)["n_past"] == 3 and seen[-1][2] == 3
    assert loaded.calls[-1][3]["window"] == 6
    got = ev.evaluate_run("runs/a", data_root="/other")
    assert got["data_root"] == "/other" and loaded.calls[-1][1] == "/other" and loaded.calls[-3] == ("device", "auto")
    assert got["split"] == "test" and got["n_samples"] == 5 and got["seed"] == 0 and (got["n_past"], got["n_future"]) == (2, 3)
    assert seen[-1][3] == dict(samples=5, seed=0, batch_size=16, max_sequences=None, progress=None,
                               motion_threshold=0.1, compile=False)
    n = len(loaded.calls)
    with pytest.raises(ConfigError, match="--motion-threshold"):
        ev.evaluate_run("runs/a", motion_threshold=0.0)
    assert len(loaded.calls) == n  # refused before the model loads


def test_predict_run_of_a_recorded_sequence(monkeypatch):
    loaded = Loaded(monkeypatch)
    seen = []

    def predict_sequence(model, frames, conds, n_past, index, samples, seed):
        seen.append((model, frames, conds, n_past, index, samples, seed))
        return {"truth": frames.clone(), "posterior": frames[1:].clone(), "samples": frames[None, 1:].clone()}

    monkeypatch.setattr(ev, "predict_sequence", predict_sequence)
    got = ev.predict_run("runs/a", split="validate", index=2, samples=2, seed=4, n_past=1, n_future=2, device="cpu")
    assert loaded.calls == [("device", "cpu"), ("load_model", Path("runs/a"), torch.device("cpu")),
                            ("open_split", "/cfg/data", "validate", dict(window=3, random_start=False, use_cache=False))]
    [(model, frames, conds, n_past, index, samples, seed)] = seen
    assert model is loaded.model and (n_past, index, samples, seed) == (1, 2, 2, 4)
    torch.testing.assert_close(frames, loaded.ds.frames[2])
    assert {k: got[k] for k in ("name", "n_past", "index", "split", "checkpoint", "actions", "truth_source")} == dict(
        name="traj_0_to_9/2", n_past=1, index=2, split="validate", checkpoint="/r/best.pt", actions=None,
        truth_source="recorded")
    torch.testing.assert_close(got["truth"], loaded.ds.frames[2])
    got = ev.predict_run("runs/a", data_root="/d2")
    assert loaded.calls[-1][1] == "/d2" and got["index"] == 0 and got["split"] == "test" and seen[-1][5:] == (3, 0)
    assert loaded.calls[-3] == ("device", "auto") and got["n_past"] == 2
    ev.predict_run("runs/a", samples=1)  # one sample is enough
    assert seen[-1][5] == 1
    for index in (3, -1):
        with pytest.raises(DataError) as err:
            ev.predict_run("runs/a", index=index)
        assert str(err.value) == (f"--index {index} out of range: the test split of /cfg/data has 3 sequences (0..2)")
    n = len(loaded.calls)
    with pytest.raises(ConfigError) as err:
        ev.predict_run("runs/a", samples=0)
    assert str(err.value) == "--samples must be >= 1, got 0" and len(loaded.calls) == n


@pytest.mark.parametrize("simulator", [True, False])
def test_predict_run_of_a_whatif(monkeypatch, tmp_path, simulator):
    loaded = Loaded(monkeypatch, action_lag=2)
    seen, whatifs = [], []
    csv = write_csv(tmp_path / "w.csv", np.full((5, 4), 0.5))
    info = {"action_lag": 1} if simulator else None
    monkeypatch.setattr(vidpred.data.synth, "read_info", lambda root: info if root == "/cfg/data" else pytest.fail(root))
    simulated = torch.full((5, 3, 16, 16), 0.25)

    def whatif(root, split, name, conds, n_past):
        whatifs.append((root, split, name, conds.clone(), n_past))
        return simulated if simulator else None

    monkeypatch.setattr(ev, "simulated_whatif", whatif)
    monkeypatch.setattr(ev, "predict_sequence", lambda model, frames, conds, n_past, index, samples, seed: seen.append(
        (frames, conds)) or {"truth": frames.clone(), "posterior": frames[1:].clone(), "samples": frames[None, 1:]})
    got = ev.predict_run("runs/a", index=1, actions=csv)
    lag = 1 if simulator else 2  # synth.json's convention, else the model's
    want = ev.read_actions(csv, loaded.ds.conds[1], 2, lag)
    torch.testing.assert_close(seen[0][1], want)
    [(root, split, name, conds, n_past)] = whatifs
    assert (root, split, name, n_past) == ("/cfg/data", "test", "traj_0_to_9/1", 2)
    torch.testing.assert_close(conds, want)
    assert got["actions"] == str(csv)
    if simulator:
        assert got["truth_source"] == "simulator"
        torch.testing.assert_close(seen[0][0], simulated)
        assert not torch.isnan(got["truth"]).any() and not torch.isnan(got["posterior"]).any()
    else:
        assert got["truth_source"] == "none"
        torch.testing.assert_close(seen[0][0], loaded.ds.frames[1])
        torch.testing.assert_close(got["truth"][:2], loaded.ds.frames[1][:2])
        assert torch.isnan(got["truth"][2:]).all() and torch.isnan(got["posterior"]).all()
    monkeypatch.setattr(vidpred.data.synth, "read_info", lambda root: {})
    ev.predict_run("runs/a", index=1, actions=csv)
    torch.testing.assert_close(seen[-1][1], ev.read_actions(csv, loaded.ds.conds[1], 2, 0))  # synth.json without a lag
