"""Metrics that see motion: the moving-region mask, PSNR and SSIM on it, and how evaluate() averages them.

Expected numbers are computed by hand from frames built so that the answer is known
(a 4x4 square that changes on a static 64x64 background), not with the code under test.
"""

import json
import math

import pytest
import torch

from vidpred.evaluation import evaluate as ev
from vidpred.evaluation import metrics
from vidpred.evaluation.metrics import MOTION_THRESHOLD, masked_psnr, masked_ssim, motion_mask, psnr, ssim

SQ = (slice(10, 14), slice(20, 24))  # the 4x4 square that moves: rows 10..13, columns 20..23


def square_scene(background=0.2, square=0.7):
    """last observed frame (3, 64, 64): flat background; true future frame: the same with the square changed."""
    last = torch.full((3, 64, 64), background)
    truth = last.clone()
    truth[:, SQ[0], SQ[1]] = square
    return last, truth


def test_motion_mask_is_the_changed_square():
    last, truth = square_scene()
    mask = motion_mask(truth, last)
    assert mask.shape == (64, 64) and mask.dtype == torch.bool
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[SQ] = True
    assert torch.equal(mask, expected)
    # batched and broadcast: (B, F, C, H, W) truth against (B, 1, C, H, W) last
    m = motion_mask(truth.expand(2, 3, 3, 64, 64), last.expand(2, 1, 3, 64, 64))
    assert m.shape == (2, 3, 64, 64) and int(m.sum()) == 2 * 3 * 16


def test_motion_threshold_boundary():
    assert MOTION_THRESHOLD == 0.1
    last = torch.full((3, 1, 6), 0.25)
    truth = last.clone()
    truth[:, 0, 0] = 0.5  # changed by exactly 0.25 (exact in binary): not above a 0.25 threshold
    truth[:, 0, 1] = 0.5 + 2 ** -8  # just above
    truth[:, 0, 2] = 0.0  # darker by exactly 0.25: |difference|, still not above
    truth[2, 0, 3] = 0.5 + 2 ** -8  # one channel (blue) is enough: max over channels
    truth[:, 0, 4] = 0.25 + 2 ** -8  # a small change: below the threshold
    assert motion_mask(truth, last, threshold=0.25)[0].tolist() == [False, True, False, True, False, False]
    # the default threshold, 0.1: changes of 0.11 (up or down) count, 0.09 do not
    truth = torch.tensor([0.5, 0.61, 0.39, 0.59]).view(1, 1, 4).expand(3, 1, 4)
    assert motion_mask(truth, torch.full((3, 1, 4), 0.5))[0].tolist() == [False, True, True, False]


def test_masked_psnr_by_hand():
    last, truth = square_scene()
    mask = motion_mask(truth, last)
    pred = truth.clone()
    pred[0, SQ[0], SQ[1]] += 0.1  # error 0.1 in the red channel of the 16 moving pixels only
    # moving region: 16 pixels x 3 channels, squared error 0.01 on one channel of each -> MSE 0.01 / 3
    expected_moving = 10 * math.log10(1 / (0.1 ** 2 / 3))  # 24.77 dB
    # whole frame: the same 16 errors over 64 x 64 pixels x 3 channels
    expected_whole = 10 * math.log10(1 / (16 * 0.1 ** 2 / (3 * 64 * 64)))  # 48.86 dB
    assert float(masked_psnr(pred, truth, mask)) == pytest.approx(expected_moving, abs=1e-3)
    assert float(psnr(pred, truth)) == pytest.approx(expected_whole, abs=1e-3)
    # the copy-last baseline on this frame: 0.5 error on every channel of every moving pixel -> MSE 0.25
    assert float(masked_psnr(last, truth, mask)) == pytest.approx(10 * math.log10(1 / 0.25), abs=1e-4)


def test_errors_outside_the_mask_change_only_the_whole_frame_score():
    last, truth = square_scene()
    mask = motion_mask(truth, last)
    pred = truth.clone()
    pred[:, SQ[0], SQ[1]] += 0.05
    noisy = pred.clone()
    noisy[:, 40:, :] += 0.3  # a wrong bottom of the table, far from the square
    assert torch.equal(masked_psnr(noisy, truth, mask), masked_psnr(pred, truth, mask))
    assert float(masked_psnr(pred, truth, mask)) == pytest.approx(10 * math.log10(1 / 0.05 ** 2), abs=1e-3)
    assert float(psnr(noisy, truth)) < float(psnr(pred, truth)) - 10
    # SSIM looks at an 11x11 Gaussian neighbourhood (radius 5): an error 10+ pixels away from
    # the square leaves every SSIM value inside it at exactly 1, but lowers the whole-frame SSIM
    far = truth.clone()
    far[:, 40:, :] = torch.rand(3, 24, 64, generator=torch.Generator().manual_seed(0))
    assert float(masked_ssim(far, truth, mask)) == pytest.approx(1.0, abs=1e-5)
    assert float(ssim(far, truth)) < 0.9


def test_empty_mask_gives_nan():
    last, _ = square_scene()
    pred = last + 0.1
    empty = motion_mask(last, last)
    assert not empty.any()
    assert math.isnan(float(masked_psnr(pred, last, empty)))
    assert math.isnan(float(masked_ssim(pred, last, empty)))
    # per frame: only the frame without motion is NaN
    _, truth = square_scene()
    frames = torch.stack([truth, last])  # (2, 3, H, W): a moving frame, then a static one
    out = masked_psnr(frames + 0.1, frames, motion_mask(frames, last))
    assert not math.isnan(float(out[0])) and math.isnan(float(out[1]))


def test_masked_ssim_with_all_ones_is_the_plain_ssim_and_splits_linearly():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 3, 64, 64, generator=g)  # (B, F, C, H, W)
    pred = (target + 0.2 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    ones = torch.ones(2, 3, 64, 64, dtype=torch.bool)
    torch.testing.assert_close(masked_ssim(pred, target, ones), ssim(pred, target), atol=1e-6, rtol=0)
    torch.testing.assert_close(masked_psnr(pred, target, ones), psnr(pred, target), atol=1e-4, rtol=0)
    # the map is averaged per pixel: a region and its complement recombine, by pixel counts, to the plain score
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[5:30, 8:50] = True
    n_in = int(mask.sum())
    inside, outside = masked_ssim(pred, target, mask), masked_ssim(pred, target, ~mask)
    torch.testing.assert_close((n_in * inside + (64 * 64 - n_in) * outside) / (64 * 64), ssim(pred, target),
                               atol=1e-5, rtol=0)


def test_broadcast_over_samples():
    g = torch.Generator().manual_seed(2)
    target = torch.rand(2, 3, 3, 64, 64, generator=g)  # (B, F, C, H, W)
    pred = torch.rand(2, 4, 3, 3, 64, 64, generator=g)  # (B, S, F, C, H, W)
    mask = torch.rand(2, 3, 64, 64, generator=g) > 0.7  # (B, F, H, W)
    p = masked_psnr(pred, target.unsqueeze(1), mask.unsqueeze(1))
    s = masked_ssim(pred, target.unsqueeze(1).expand_as(pred), mask.unsqueeze(1))
    assert p.shape == s.shape == (2, 4, 3)
    torch.testing.assert_close(p[1, 2], masked_psnr(pred[1, 2], target[1], mask[1]))
    torch.testing.assert_close(s[1, 2], masked_ssim(pred[1, 2], target[1], mask[1]))


def _torchmetrics_map(pred, target):
    structural_similarity_index_measure = pytest.importorskip(
        "torchmetrics.functional.image").structural_similarity_index_measure  # the dev extra's reference
    score, full = structural_similarity_index_measure(pred, target, gaussian_kernel=True, sigma=1.5, kernel_size=11,
                                                      data_range=1.0, reduction="none", return_full_image=True)
    return score, full


@pytest.mark.parametrize("size", [(64, 64), (40, 56), (6, 9)])
def test_ssim_is_torchmetrics_ssim(size):
    # the reference implementation: same window, padding and constants, one 2-D convolution
    g = torch.Generator().manual_seed(3)
    target = torch.rand(5, 3, *size, generator=g)
    pred = (target + 0.15 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    smooth = torch.linspace(0, 1, size[1]).expand(5, 3, *size).contiguous()  # a ramp: large windows agree
    for p, t in ((pred, target), (smooth, smooth.flip(-1)), (target, target)):
        # against torchmetrics in float64: float32 rounding is all that differs (where the
        # variances nearly cancel, as on the ramps, torchmetrics' own float32 map is 1.5e-4 off)
        want_score, want_map = _torchmetrics_map(p.double(), t.double())
        torch.testing.assert_close(metrics.ssim_map(p, t).double(), want_map, atol=1e-4, rtol=0)
        torch.testing.assert_close(ssim(p, t).double(), want_score, atol=1e-5, rtol=0)


def test_ssim_broadcasts_the_target_and_slices_large_inputs(monkeypatch):
    g = torch.Generator().manual_seed(4)
    target = torch.rand(3, 1, 2, 3, 64, 64, generator=g)  # (B, 1, F, C, H, W)
    pred = torch.rand(3, 4, 2, 3, 64, 64, generator=g)  # (B, S, F, C, H, W)
    mask = torch.rand(3, 1, 2, 64, 64, generator=g) > 0.6
    full = metrics.ssim_map(pred, target.expand_as(pred))
    torch.testing.assert_close(metrics.ssim_map(pred, target), full, atol=1e-6, rtol=0)
    flat = lambda x: x.expand_as(pred).reshape(-1, 3, 64, 64).double()  # noqa: E731
    _, want = _torchmetrics_map(flat(pred), flat(target))
    torch.testing.assert_close(full.double(), want.reshape(full.shape), atol=1e-5, rtol=0)
    whole, moving = metrics.ssim_scores(pred, target, mask)
    assert whole.shape == moving.shape == (3, 4, 2)
    torch.testing.assert_close(whole, ssim(pred, target), atol=1e-6, rtol=0)
    torch.testing.assert_close(moving, masked_ssim(pred, target, mask), atol=0, rtol=0)
    # inputs past the chunk size go through in slices of dim 0 (one sequence here), same numbers
    monkeypatch.setattr(metrics, "_SSIM_CHUNK", 4 * 2 * 3 * 64 * 64)
    torch.testing.assert_close(metrics.ssim_map(pred, target), full, atol=1e-6, rtol=0)
    monkeypatch.setattr(metrics, "_SSIM_CHUNK", 1000)  # less than one sequence: one at a time still
    torch.testing.assert_close(metrics.ssim_map(pred, target), full, atol=1e-6, rtol=0)


@pytest.mark.parametrize("pred_shape, target_shape", [
    ((2, 3, 16, 20), (4, 2, 3, 16, 20)), ((4, 2, 3, 16, 20), (2, 3, 16, 20)), ((3, 16, 20), (4, 2, 3, 16, 20)),
    ((5, 2, 3, 16, 20), (4, 1, 2, 3, 16, 20)), ((6, 3, 16, 20), (1, 3, 16, 20))])
def test_ssim_slices_inputs_of_different_ranks_along_the_shared_dim_0(monkeypatch, pred_shape, target_shape):
    g = torch.Generator().manual_seed(5)
    pred, target = torch.rand(pred_shape, generator=g), torch.rand(target_shape, generator=g)
    whole = metrics.ssim_map(pred, target)
    assert whole.shape == torch.broadcast_shapes(pred_shape, target_shape)
    monkeypatch.setattr(metrics, "_SSIM_CHUNK", 1000)  # every one of these goes through in slices
    torch.testing.assert_close(metrics.ssim_map(pred, target), whole, atol=1e-6, rtol=0)


def test_ssim_slices_exactly_the_inputs_larger_than_the_chunk(monkeypatch):
    # one pair of filter matrices per slice: count them
    calls = []
    real = metrics._gaussian_filter_matrix
    monkeypatch.setattr(metrics, "_gaussian_filter_matrix", lambda n, device: calls.append(n) or real(n, device))
    frame = 3 * 16 * 20

    def slices(pred_shape, target_shape, chunk):
        monkeypatch.setattr(metrics, "_SSIM_CHUNK", chunk)
        calls.clear()
        out = metrics.ssim_map(torch.rand(pred_shape), torch.rand(target_shape))
        assert out.shape == torch.broadcast_shapes(pred_shape, target_shape)
        return len(calls) // 2

    assert slices((4, 2, 3, 16, 20), (4, 1, 3, 16, 20), 2 * frame) == 4  # one sequence per slice
    assert slices((4, 2, 3, 16, 20), (4, 1, 3, 16, 20), 4 * frame) == 2
    assert slices((4, 2, 3, 16, 20), (4, 1, 3, 16, 20), 8 * frame) == 1  # exactly the chunk: whole
    assert slices((2, 2, 3, 16, 20), (2, 2, 3, 16, 20), 2 * frame) == 2  # dim 0 of 2 is sliced too
    assert slices((2, 3, 16, 20), (1, 3, 16, 20), frame) == 2  # frames (N, C, H, W) as well
    assert slices((3, 16, 20), (3, 16, 20), 100) == 1  # one frame has nothing to slice


def test_ssim_of_frames_smaller_than_the_window_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 6 x 6 pixels"):
        ssim(torch.rand(1, 3, 5, 64), torch.rand(1, 3, 5, 64))


# --- evaluate(): averaging, NaN exclusion and best / worst on a scene with known answers -----------------

N_PAST, F = 2, 3
BASE = (0.1, 0.2, 0.04)  # per sample: the error inside the square, times (step + 1)
MOVES = ((True, True, False), (True, False, False))  # per sequence and future step: does the square change?


class SquareDataset:
    """Two sequences of 5 black frames; in the future frames listed in MOVES the square turns grey (0.5)."""

    def __len__(self):
        return 2

    def truth(self, i):
        frames = torch.zeros(N_PAST + F, 3, 64, 64)
        for k, moves in enumerate(MOVES[i]):
            if moves:
                frames[N_PAST + k, :, SQ[0], SQ[1]] = 0.5
        return frames

    def __getitem__(self, i):
        return self.truth(i), torch.zeros(N_PAST + F, 7)

    def sequence_name(self, i):
        return f"square/{i}"


def fake_predict_samples(model, frames, conds, n_past, indices, samples, seed, rollout_fn=None):
    """Sample s = the truth with error BASE[s] * (k + 1) on every channel of the square at step k;
    sample 2 (the best inside the square) also gets the bottom half of the table wrong, so that
    it is the worst sample on the whole frame."""
    truth = frames[:, n_past:]
    out = truth.unsqueeze(1).repeat(1, samples, 1, 1, 1, 1)  # (B, S, F, 3, H, W)
    for s in range(samples):
        for k in range(F):
            out[:, s, k, :, SQ[0], SQ[1]] += BASE[s] * (k + 1)
    out[:, 2, :, :, 32:, :] += 0.3
    return out


def fake_posterior_run(model, frames, conds, n_past, indices, seed):
    """The posterior run of a model that gets the future right, with no KL."""
    future = frames[:, n_past:].float()
    return future, torch.zeros(*future.shape[:2], 1)


def test_evaluate_moving_region_by_hand(monkeypatch, stand_in_model):
    monkeypatch.setattr(ev, "predict_samples", fake_predict_samples)
    monkeypatch.setattr(ev, "posterior_run", fake_posterior_run)
    res = ev.evaluate(stand_in_model, SquareDataset(), N_PAST, samples=3, progress=False)
    json.dumps(res, allow_nan=False)  # no NaN in the JSON: frames without motion become null

    def moving(s, k):  # every channel of every moving pixel is off by BASE[s] * (k + 1)
        return -20 * math.log10(BASE[s] * (k + 1))

    def whole(s, k):
        mse = 16 * (BASE[s] * (k + 1)) ** 2 / (64 * 64)
        if s == 2:
            mse += 32 * 64 * 0.3 ** 2 / (64 * 64)
        return 10 * math.log10(1 / mse)

    scored = [(0, 0), (0, 1), (1, 0)]  # (sequence, step) frames with moving pixels; step 2 never moves
    m = res["model"]["psnr_moving"]
    for stat, value in (("first", lambda k: moving(0, k)), ("best", lambda k: moving(2, k)),
                        ("worst", lambda k: moving(1, k)), ("mean", lambda k: sum(moving(s, k) for s in range(3)) / 3)):
        assert m[stat]["per_step"][:2] == pytest.approx([value(0), value(1)], abs=1e-3), stat
        assert m[stat]["per_step"][2] is None, stat  # no moving pixel at that step in any sequence
        # the average is over the scored frames: step 0 counts twice (two sequences), step 1 once
        assert m[stat]["average"] == pytest.approx(sum(value(k) for _, k in scored) / 3, abs=1e-3), stat
    assert m["best"]["average"] >= m["mean"]["average"] >= m["worst"]["average"]
    # whole-frame best / worst keep their own rule: sample 0 is the best, sample 2 the worst on the whole frame
    p = res["model"]["psnr"]
    assert p["best"]["per_step"] == pytest.approx([whole(0, k) for k in range(F)], abs=1e-3)
    assert p["worst"]["per_step"] == pytest.approx([whole(2, k) for k in range(F)], abs=1e-3)
    # SSIM on the moving region is reported for the sample picked by moving-region PSNR (sample 2)
    frames = SquareDataset().truth(0)
    pred = fake_predict_samples(None, frames.unsqueeze(0), None, N_PAST, [0], 3, 0)[0, 2]
    expect = masked_ssim(pred, frames[N_PAST:], motion_mask(frames[N_PAST:], frames[N_PAST - 1]))
    assert res["model"]["ssim_moving"]["best"]["per_step"][1] == pytest.approx(float(expect[1]), abs=1e-5)
    assert res["model"]["ssim_moving"]["mean"]["per_step"][2] is None
    # copy-last: black instead of 0.5 on every moving pixel and channel -> MSE 0.25 -> 6.02 dB
    base = 10 * math.log10(4)
    assert res["copy_last"]["psnr_moving"]["per_step"][:2] == pytest.approx([base, base], abs=1e-4)
    assert res["copy_last"]["psnr_moving"]["per_step"][2] is None
    assert res["copy_last"]["psnr_moving"]["average"] == pytest.approx(base, abs=1e-4)
    assert res["copy_last"]["psnr"]["per_step"][2] == pytest.approx(100.0)  # whole frame: unchanged rule
    assert res["psnr_moving_margin_db"] == pytest.approx(m["mean"]["average"] - base, abs=1e-4)
    # how much moved: 16 pixels in 3 of the 2 x 3 future frames
    assert res["motion_threshold"] == MOTION_THRESHOLD
    assert res["moving_fraction"] == pytest.approx(3 * 16 / (2 * 3 * 64 * 64), abs=1e-6)
    assert res["moving_fraction_per_step"] == pytest.approx([16 / 4096, 8 / 4096, 0.0], abs=1e-6)
    assert res["frames_without_motion"] == 3
    rows = res["per_sequence"]
    assert rows[0]["psnr_moving_mean"] == pytest.approx(
        sum(moving(s, k) for s in range(3) for k in (0, 1)) / 6, abs=1e-3)
    assert rows[1]["psnr_moving_copy_last"] == pytest.approx(base, abs=1e-3)


def test_evaluate_without_any_motion_reports_null(monkeypatch, stand_in_model):
    monkeypatch.setattr(ev, "predict_samples", fake_predict_samples)
    monkeypatch.setattr(ev, "posterior_run", fake_posterior_run)
    monkeypatch.setattr(SquareDataset, "truth", lambda self, i: torch.zeros(N_PAST + F, 3, 64, 64))
    res = ev.evaluate(stand_in_model, SquareDataset(), N_PAST, samples=3, progress=False)
    json.dumps(res, allow_nan=False)
    assert res["model"]["psnr_moving"]["mean"] == {"per_step": [None] * F, "average": None}
    assert res["copy_last"]["ssim_moving"]["average"] is None
    assert res["psnr_moving_margin_db"] is None and res["moving_fraction"] == 0.0
    assert res["per_sequence"][0]["psnr_moving_mean"] is None
    res.update(split="test", data_root="x", n_past=N_PAST, n_future=F, n_samples=3, seed=0, checkpoint="c.pt")
    table = ev.format_table(res)
    assert "PSNR moving region (dB)" in table and "n/a" in table


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_motion_threshold_is_checked(bad, stand_in_model):
    from vidpred.errors import ConfigError

    with pytest.raises(ConfigError, match="--motion-threshold must be > 0 and < 1"):
        ev.check_motion_threshold(bad)
    with pytest.raises(ConfigError, match="--motion-threshold"):
        ev.evaluate(stand_in_model, SquareDataset(), N_PAST, samples=1, motion_threshold=bad)
