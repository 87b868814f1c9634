"""Unit tests written against the mutants that survived `make mutation` (docs/testing.md).

Each test pins a value computed independently of the code under test (by hand, or a
recorded constant whose change would alter results), at the inputs where a one-token
change of the code shows: boundaries, the end of a schedule, an odd frame size.
All are fast (no model, no data): they are part of the mutation test selection in
pyproject.toml ([tool.mutmut]).
"""

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from vidpred.config import KLConfig
from vidpred.evaluation.metrics import masked_psnr
from vidpred.reporting import media
from vidpred.training.schedules import kl_beta, use_teacher_forcing

# -- training/schedules.py ------------------------------------------------------------


def test_monotonic_kl_stays_at_its_maximum_after_the_planned_end():
    """An extended run (README: "a monotonic ramp stays at its maximum after its planned
    end") keeps beta_max; a cyclical schedule restarts instead."""
    mono = KLConfig(schedule="monotonic", beta_max=0.8, ratio=0.5)
    assert [kl_beta(mono, s, 10) for s in (10, 11, 15, 19, 25)] == [0.8] * 5
    cyc = KLConfig(schedule="cyclical", beta_max=0.8, cycles=1, ratio=0.5)
    assert kl_beta(cyc, 11, 10) == pytest.approx(0.8 * (1 / 10) / 0.5)  # 0.16: a second cycle


def test_kl_of_a_one_step_run():
    """A run planned as one step (total_steps 1, or 0 clamped to 1): the ramp ends at step 1."""
    cfg = KLConfig(schedule="monotonic", beta_max=1.0, ratio=1.0)
    assert [kl_beta(cfg, s, 1) for s in (0, 1, 2)] == [0.0, 1.0, 1.0]
    assert [kl_beta(cfg, s, 0) for s in (0, 1)] == [0.0, 1.0]


def test_teacher_forcing_draws_are_the_recorded_stream():
    """The draw of (seed, step) is np.random.default_rng([seed, step, 0x7F]).random() < ratio.
    Recorded values: a changed stream would make a resumed run of an older version take
    different teacher-forcing decisions than the original run."""
    # default_rng([0, s, 0x7F]).random() for s = 0..11:
    # 0.620 0.470 0.902 0.797 0.449 0.604 0.876 0.894 0.889 0.872 0.976 0.193
    assert [use_teacher_forcing(0.5, 0, s) for s in range(12)] == [
        False, True, False, False, True, False, False, False, False, False, False, True]
    assert [use_teacher_forcing(0.61, 0, s) for s in range(6)] == [False, True, False, False, True, True]


# -- evaluation/metrics.py --------------------------------------------------------------


def test_masked_psnr_of_a_single_moving_pixel():
    """A moving region of one pixel is scored (not NaN), from that pixel's error alone."""
    target = torch.full((2, 3, 4, 4), 0.5)  # (F, C, H, W)
    pred = target.clone()
    pred[:, :, 1, 2] += torch.tensor([0.1, 0.2, 0.3]).view(1, 3)  # the moving pixel
    pred[:, :, 3, 0] += 0.4  # an error outside the region
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, 1, 2] = True
    expected = 10 * math.log10(1 / ((0.1 ** 2 + 0.2 ** 2 + 0.3 ** 2) / 3))  # 16.72 dB
    assert masked_psnr(pred, target, mask).tolist() == pytest.approx([expected] * 2, abs=1e-4)


# -- reporting/media.py ---------------------------------------------------------------
# Pictures are checked against pictures built here from the documented layout (sizes,
# colours, borders), and every label against the same text drawn independently with
# Pillow's built-in font: same pixels, and its box centred in its place (rounding left/up).

BG = (255, 255, 255)
PAST, FUTURE, EMPTY, INK = (46, 160, 67), (214, 39, 40), (225, 225, 225), (20, 20, 20)


def flat_frames(*lead, h, w, seed=0):
    """Frames (*lead, 3, h, w), each one flat colour (multiples of 1/255: exact in uint8 and in a GIF)."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.randint(0, 256, (*lead, 3, 1, 1), generator=g).float() / 255
    return colours.expand(*lead, 3, h, w).clone()


def pixels(frame, scale):
    """(3, h, w) in [0, 1] -> (h * scale, w * scale, 3) uint8, nearest-neighbour upscaled."""
    a = (np.asarray(frame).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    return a.repeat(scale, 0).repeat(scale, 1)


def ink_box(a, bg=BG):
    """Rows and columns (r0, r1, c0, c1) of the pixels of `a` (h, w, 3) that are not `bg`."""
    rows, cols = np.nonzero((a != np.array(bg, dtype=a.dtype)).any(-1))
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def assert_text(img, box, text, size=13, fill=INK, tol=0):
    """The region `box` (left, top, right, bottom) of `img` shows `text` and nothing else, drawn
    in Pillow's built-in font of `size` in `fill`, its text box centred (extra pixel right / below).
    `tol`: the largest difference of a channel (a GIF's palette moves a few anti-aliased pixels by a few levels)."""
    f = ImageFont.load_default(size=size)
    ref = Image.new("RGB", (500, 80), BG)
    draw = ImageDraw.Draw(ref)
    draw.text((20, 20), text, fill=fill, font=f)
    tl, tt, tr, tb = draw.textbbox((20, 20), text, font=f)
    ref = np.asarray(ref)
    r0, r1, c0, c1 = ink_box(ref)
    left, top, right, bottom = box
    region = np.asarray(img.convert("RGB"))[top:bottom, left:right]
    g0, g1, h0, h1 = ink_box(region)
    assert region[g0:g1, h0:h1].shape == ref[r0:r1, c0:c1].shape, text
    np.testing.assert_allclose(region[g0:g1, h0:h1], ref[r0:r1, c0:c1], rtol=0, atol=tol, err_msg=text)
    # the text box around the ink: its margins in the region
    gap_l, gap_r = h0 - (c0 - tl), (right - left) - (h1 + (tr - c1))
    gap_t, gap_b = g0 - (r0 - tt), (bottom - top) - (g1 + (tb - r1))
    assert gap_l <= gap_r <= gap_l + 1 and gap_t <= gap_b <= gap_t + 1, (text, gap_l, gap_r, gap_t, gap_b)
    return region


def test_to_uint8_rounds_and_clips_arrays_and_tensors():
    values = [-0.3, 0.0, 0.5, 100.4 / 255, 100.6 / 255, 1.0, 1.7]
    a = np.array(values, dtype=np.float32).reshape(1, 1, 7).repeat(3, 0)  # (3, 1, 7)
    expected = np.array([0, 0, 128, 100, 101, 255, 255], dtype=np.uint8).reshape(1, 7, 1).repeat(3, 2)
    out = media.to_uint8(a)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    # a tensor that needs grad (as a model output would) goes through .detach()
    np.testing.assert_array_equal(media.to_uint8(torch.tensor(a, requires_grad=True)), expected)


def test_comparison_frames_layout_by_hand():
    """Non-square frames, an odd height (7 x 3 = 21 px): the picture is padded to an even size."""
    T, n_past, h, w, scale = 4, 2, 7, 30, 3
    truth = flat_frames(T, h=h, w=w, seed=1)
    truth[3] = float("nan")  # a what-if without a simulator: no true frame
    prediction = flat_frames(T - n_past, h=h, w=w, seed=2)
    frames = media.comparison_frames(truth, prediction, n_past, scale=scale)
    assert len(frames) == T
    panel_w = w * scale + 2 * 3  # border 3
    width, height = 8 + panel_w + 8 + panel_w + 8, 20 + h * scale + 2 * 3 + 22 + 8  # 216, 77
    assert (width, height) == (216, 77)
    grey = np.full((3, h, w), 224 / 255)  # the left panel of a missing true frame: 0.88 -> 224
    for t, img in enumerate(frames):
        assert img.size == (216, 78) and img.mode == "RGB"
        past = t < n_past
        expected = np.full((78, 216, 3), BG, dtype=np.uint8)
        for k, frame in enumerate((truth[t] if t < 3 else grey, truth[t] if past else prediction[t - n_past])):
            x0 = 8 + k * (panel_w + 8)
            expected[20:20 + h * scale + 6, x0:x0 + panel_w] = PAST if (past or k == 0) else FUTURE
            expected[23:23 + h * scale, x0 + 3:x0 + 3 + w * scale] = pixels(frame, scale)
            assert_text(img, (x0, 0, x0 + panel_w, 20), ("ground truth", "prediction")[k])
        caption = f"frame {t + 1}/{T}  " + ("observed" if past else "predicted")
        assert_text(img, (0, 47, 216, 69), caption, fill=PAST if past else FUTURE)
        got = np.asarray(img)
        np.testing.assert_array_equal(got[20:47], expected[20:47])  # panels, borders and margins
        assert (got[69:] == BG).all()  # the bottom margin


def test_comparison_frames_default_scale_and_length_check():
    truth, prediction = flat_frames(3, h=8, w=8), flat_frames(1, h=8, w=8)
    assert media.comparison_frames(truth, prediction, 2)[0].size == (2 * (24 + 6) + 3 * 8, 20 + 24 + 6 + 22 + 8)
    with pytest.raises(ValueError, match=r"^prediction has 1 frames, expected 2$"):
        media.comparison_frames(truth, prediction, 1)


def test_gif_timing_loop_and_file_objects(tmp_path):
    frames = [Image.new("RGB", (10, 6), c) for c in (PAST, FUTURE, INK)]
    path = media.save_gif(frames, str(tmp_path / "a.gif"))
    assert isinstance(path, Path) and path == tmp_path / "a.gif"
    buffer = io.BytesIO()
    assert media.save_gif(frames, buffer) is buffer
    for source in (path, io.BytesIO(buffer.getvalue())):
        gif = Image.open(source)
        assert gif.format == "GIF" and gif.n_frames == 3 and gif.info["loop"] == 0  # loops forever
        shown = []
        for t in range(3):
            gif.seek(t)
            shown.append((gif.info["duration"], gif.convert("RGB").getpixel((5, 3))))
        assert shown == [(400, PAST), (400, FUTURE), (1200, INK)]  # the last frame held 3 x longer


@pytest.mark.skipif(not media.mp4_available(), reason="imageio-ffmpeg not installed (the video extra)")
def test_mp4_is_h264_at_the_frame_rate_and_size_of_the_frames(tmp_path):
    import imageio.v2 as imageio

    colours = (PAST, FUTURE, (30, 60, 200), BG)
    frames = [Image.new("RGB", (46, 78), c) for c in colours]  # not multiples of 16: kept as they are
    path = media.save_mp4(frames, str(tmp_path / "a.mp4"))
    assert isinstance(path, Path) and path == tmp_path / "a.mp4"
    reader = imageio.get_reader(path, format="FFMPEG")
    meta = reader.get_meta_data()
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert meta["fps"] == 2.5 and meta["size"] == (46, 78)
    decoded = [frame for frame in reader]
    reader.close()
    assert len(decoded) == 4
    for frame, colour in zip(decoded, colours):  # lossy, but a flat colour stays close
        assert frame.shape == (78, 46, 3)
        assert np.abs(frame.astype(float).mean((0, 1)) - colour).max() < 6


def test_grid_geometry_by_hand():
    # 64-pixel frames (the default) at scale 2: cells of 128 + 4 padding, a 110-pixel label
    # column and a 34-pixel header
    assert media.grid_size(4, 3, 2) == (110 + 3 * 132 + 4, 34 + 4 * 132 + 4)
    assert media.cell_origin(0, 0, 2) == (114, 38)
    assert media.cell_origin(1, 2, 2) == (114 + 2 * 132, 38 + 132)
    assert media.cell_origin(2, 1, 1, frame_px=16) == (114 + 20, 38 + 2 * 20)


def test_prediction_grid_by_hand():
    """16-pixel frames at the default scale 2; a what-if without a simulator: no true future,
    and a NaN posterior frame, both empty cells."""
    T, n_past, S, cell = 3, 2, 2, 32
    truth = flat_frames(T, h=16, w=16, seed=3)
    truth[2] = float("nan")
    posterior = flat_frames(T - 1, h=16, w=16, seed=4)
    posterior[1] = float("nan")
    samples = flat_frames(S, T - 1, h=16, w=16, seed=5)
    img = media.prediction_grid(truth, posterior, samples, n_past)
    assert img.size == (110 + T * (cell + 4) + 4, 34 + (2 + S) * (cell + 4) + 4) == (222, 182)
    got = np.asarray(img)
    expected = np.full((182, 222, 3), BG, dtype=np.uint8)
    rows = [[truth[0], truth[1], None], [None, posterior[0], None]] + [[None, *s] for s in samples]
    labels = ["ground truth", "posterior", "prior sample 1", "prior sample 2"]
    for c in range(T):
        x = 114 + c * (cell + 4)
        expected[26:32, x:x + cell] = PAST if c < n_past else FUTURE  # the header bar
        expected[2:24, x:x + cell] = assert_text(img, (x, 2, x + cell, 24), str(c + 1))
    for r, (label, frames) in enumerate(zip(labels, rows)):
        y = 38 + r * (cell + 4)
        expected[y:y + cell, 2:108] = assert_text(img, (2, y, 108, y + cell), label, size=12)
        for c, frame in enumerate(frames):
            x = 114 + c * (cell + 4)
            expected[y:y + cell, x:x + cell] = EMPTY if frame is None else pixels(frame, 2)
    np.testing.assert_array_equal(got, expected)


def prediction(actions=None, truth_source=None):
    T, n_past = 3, 2
    pred = {"truth": flat_frames(T, h=40, w=40, seed=6), "posterior": flat_frames(T - 1, h=40, w=40, seed=7),
            "samples": flat_frames(2, T - 1, h=40, w=40, seed=8), "n_past": n_past, "split": "val", "index": 7,
            "actions": actions}
    if truth_source:
        pred["truth_source"] = truth_source
    return pred


def gif_titles_and_grid_label(paths, left, right, label, grid_scale=2):
    gif = Image.open(paths["gif"])  # few colours: the GIF palette is exact
    panel_w = 40 * 3 + 6  # default scale 3
    assert gif.size == (8 + panel_w + 8 + panel_w + 8, 20 + 120 + 6 + 22 + 8)
    assert_text(gif, (8, 0, 8 + panel_w, 20), left, tol=8)
    assert_text(gif, (8 + panel_w + 8, 0, 8 + 2 * panel_w + 8, 20), right, tol=8)
    grid = Image.open(paths["grid"])
    cell = 40 * grid_scale
    assert grid.size == (110 + 3 * (cell + 4) + 4, 34 + 4 * (cell + 4) + 4)
    assert_text(grid, (2, 38, 108, 38 + cell), label, size=12)


def test_write_prediction_names_and_labels(tmp_path):
    out = tmp_path / "new" / "folder"  # parents are created
    paths = media.write_prediction(prediction(), out)
    expected = {"gif": out / "val_7.gif", "grid": out / "val_7_grid.png"}
    if media.mp4_available():
        expected["mp4"] = out / "val_7.mp4"
    assert paths == expected and all(p.is_file() for p in paths.values())
    gif_titles_and_grid_label(paths, "ground truth", "prediction", "ground truth")

    whatif = media.write_prediction(prediction(actions="a.csv", truth_source="simulator"), out, mp4=False)
    assert whatif == {"gif": out / "val_7_whatif.gif", "grid": out / "val_7_whatif_grid.png"}
    gif_titles_and_grid_label(whatif, "simulator what-if", "what-if prediction", "simulator what-if")

    named = media.write_prediction(prediction(truth_source="none"), out, stem="mine", grid_scale=1, mp4=False)
    assert named == {"gif": out / "mine.gif", "grid": out / "mine_grid.png"}
    gif_titles_and_grid_label(named, "observed only", "prediction", "observed only", grid_scale=1)


def test_without_imageio_ffmpeg_there_is_no_mp4_and_no_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # `import imageio_ffmpeg` raises ImportError
    assert media.mp4_available() is False
    frames = [Image.new("RGB", (8, 8), PAST)] * 2
    assert media.save_mp4(frames, tmp_path / "a.mp4") is None and not (tmp_path / "a.mp4").exists()
    paths = media.write_prediction(prediction(), tmp_path)
    assert sorted(paths) == ["gif", "grid"] and not list(tmp_path.glob("*.mp4"))
