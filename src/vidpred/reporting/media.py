"""Pictures of one predicted sequence: an animated GIF (and MP4), and a per-time-step grid PNG.

Inputs are float tensors or arrays in [0, 1], frames ``(T, 3, H, W)``. Frames are
upscaled by an integer factor with nearest-neighbour sampling (no blur) so the
labels, drawn with PIL's default font, stay legible. Observed frames are framed
in green, predicted ones in red, in both pictures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAST = (46, 160, 67)  # green: observed (conditioning) frames
FUTURE = (214, 39, 40)  # red: predicted frames
BG = (255, 255, 255)
EMPTY = (225, 225, 225)
INK = (20, 20, 20)

# The top row / left panel: the recorded sequence, or for a what-if the simulator's
# re-run under the new actions, or nothing after the observed frames (real data).
TRUTH_LABELS = {"recorded": "ground truth", "simulator": "simulator what-if", "none": "observed only"}

# Grid geometry (pixels); see grid_size().
GRID_PAD = 4
GRID_LABEL_W = 110
GRID_HEADER_H = 34
# GIF geometry
GIF_BORDER = 3
GIF_MARGIN = 8
GIF_TITLE_H = 20
GIF_CAPTION_H = 22


def font(size: int = 13) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def to_uint8(frame) -> np.ndarray:
    """(3, H, W) float in [0, 1] (tensor or array) -> (H, W, 3) uint8."""
    a = frame.detach().cpu().numpy() if hasattr(frame, "detach") else np.asarray(frame)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def upscale(frame, scale: int) -> Image.Image:
    img = Image.fromarray(to_uint8(frame), "RGB")
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def _text_center(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, fill=INK, size=13) -> None:
    f = font(size)
    l, t, r, b = draw.textbbox((0, 0), text, font=f)
    x = box[0] + (box[2] - box[0] - (r - l)) // 2 - l
    y = box[1] + (box[3] - box[1] - (b - t)) // 2 - t
    draw.text((x, y), text, fill=fill, font=f)


# -- GIF / MP4 ----------------------------------------------------------------------


def comparison_frames(truth, prediction, n_past: int, scale: int = 3,
                      titles: tuple[str, str] = ("ground truth", "prediction")) -> list[Image.Image]:
    """One picture per time step: ground truth beside the prediction, labelled.

    truth (T, 3, H, W); prediction (T - n_past, 3, H, W), the predicted future.
    During the observed steps both panels show the observed frame (framed green,
    captioned "observed"); after that the right panel is the prediction (red).
    """
    T = truth.shape[0]
    F = prediction.shape[0]
    if F != T - n_past:
        raise ValueError(f"prediction has {F} frames, expected {T - n_past}")
    H, W = truth.shape[-2] * scale, truth.shape[-1] * scale
    panel_w = W + 2 * GIF_BORDER
    width = 2 * panel_w + 3 * GIF_MARGIN
    height = GIF_TITLE_H + H + 2 * GIF_BORDER + GIF_CAPTION_H + GIF_MARGIN
    width += width % 2  # even sizes for video encoders
    height += height % 2
    out = []
    for t in range(T):
        past = t < n_past
        img = Image.new("RGB", (width, height), BG)
        draw = ImageDraw.Draw(img)
        right = truth[t] if past else prediction[t - n_past]
        left = truth[t] if np.isfinite(np.asarray(truth[t])).all() else np.full(truth[t].shape, 0.88)
        for k, (frame, title) in enumerate(((left, titles[0]), (right, titles[1]))):
            x0 = GIF_MARGIN + k * (panel_w + GIF_MARGIN)
            y0 = GIF_TITLE_H
            _text_center(draw, (x0, 0, x0 + panel_w, GIF_TITLE_H), title)
            colour = PAST if (past or k == 0) else FUTURE
            draw.rectangle((x0, y0, x0 + panel_w - 1, y0 + H + 2 * GIF_BORDER - 1), fill=colour)
            img.paste(upscale(frame, scale), (x0 + GIF_BORDER, y0 + GIF_BORDER))
        phase = "observed" if past else "predicted"
        caption = f"frame {t + 1}/{T}  {phase}"
        y_cap = GIF_TITLE_H + H + 2 * GIF_BORDER
        _text_center(draw, (0, y_cap, width, y_cap + GIF_CAPTION_H), caption, fill=PAST if past else FUTURE)
        out.append(img)
    return out


def save_gif(frames: list[Image.Image], path, frame_ms: int = 400, last_ms: int = 1200):
    """An endlessly looping GIF; the last frame is held longer so the loop is readable.
    ``path``: a file name (returned as a Path) or a binary file object (returned as is)."""
    path = Path(path) if isinstance(path, (str, Path)) else path
    durations = [frame_ms] * (len(frames) - 1) + [last_ms]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   optimize=False, disposal=1)
    return path


def mp4_available() -> bool:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def save_mp4(frames: list[Image.Image], path: str | Path, fps: float = 2.5) -> Path | None:
    """H.264 MP4 via imageio-ffmpeg when it is installed (the ``video`` extra); None otherwise."""
    if not mp4_available():
        return None
    import imageio.v2 as imageio

    path = Path(path)
    with imageio.get_writer(path, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1,
                            ffmpeg_log_level="error") as writer:
        for img in frames:
            writer.append_data(np.asarray(img))
    return path


# -- grid -----------------------------------------------------------------------------


def grid_size(rows: int, cols: int, scale: int, frame_px: int = 64) -> tuple[int, int]:
    """(width, height) of a grid of ``rows`` x ``cols`` frames upscaled by ``scale``."""
    cell = frame_px * scale
    return (GRID_LABEL_W + cols * (cell + GRID_PAD) + GRID_PAD,
            GRID_HEADER_H + rows * (cell + GRID_PAD) + GRID_PAD)


def cell_origin(row: int, col: int, scale: int, frame_px: int = 64) -> tuple[int, int]:
    """Top-left pixel of the frame in grid cell (row, col)."""
    cell = frame_px * scale
    return (GRID_LABEL_W + GRID_PAD + col * (cell + GRID_PAD), GRID_HEADER_H + GRID_PAD + row * (cell + GRID_PAD))


def prediction_grid(truth, posterior, samples, n_past: int, scale: int = 2,
                    truth_label: str = "ground truth") -> Image.Image:
    """Per-time-step grid: columns are frames 1..T, rows are the ground truth, the
    posterior reconstruction and each prior sample.

    truth (T, 3, H, W); posterior (T - 1, 3, H, W) and samples (S, T - 1, 3, H, W)
    predict frames 2..T (there is no prediction of frame 1: that cell is grey).
    Header: frame number over a green (observed) or red (predicted) bar. A truth frame
    of NaN (a what-if without a simulator) is an empty cell.
    """
    T = truth.shape[0]
    known = [bool(np.isfinite(np.asarray(truth[t])).all()) for t in range(T)]  # NaN: no true frame (what-if)
    rows = [(truth_label, [truth[t] if known[t] else None for t in range(T)])]
    finite = lambda x: x if np.isfinite(np.asarray(x)).all() else None  # noqa: E731 (NaN: empty cell)
    rows.append(("posterior", [None] + [finite(posterior[t]) for t in range(T - 1)]))
    rows += [(f"prior sample {s + 1}", [None] + [samples[s][t] for t in range(T - 1)]) for s in range(len(samples))]
    size = truth.shape[-1]
    width, height = grid_size(len(rows), T, scale, size)
    cell = size * scale
    img = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(img)
    for c in range(T):
        x, _ = cell_origin(0, c, scale, size)
        colour = PAST if c < n_past else FUTURE
        _text_center(draw, (x, 2, x + cell, GRID_HEADER_H - 10), f"{c + 1}")
        draw.rectangle((x, GRID_HEADER_H - 8, x + cell - 1, GRID_HEADER_H - 3), fill=colour)
    for r, (label, frames) in enumerate(rows):
        _, y = cell_origin(r, 0, scale, size)
        _text_center(draw, (2, y, GRID_LABEL_W - 2, y + cell), label, size=12)
        for c, frame in enumerate(frames):
            x, y = cell_origin(r, c, scale, size)
            if frame is None:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=EMPTY)
            else:
                img.paste(upscale(frame, scale), (x, y))
    return img


def write_prediction(pred: dict, out_dir: str | Path, stem: str | None = None, scale: int = 3,
                     grid_scale: int = 2, mp4: bool = True) -> dict[str, Path]:
    """Write the GIF, the grid PNG and (when possible) the MP4 of one
    :func:`vidpred.evaluation.evaluate.predict_run` result; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_past = pred["n_past"]
    stem = stem or f"{pred['split']}_{pred['index']}" + ("_whatif" if pred.get("actions") else "")
    truth_label = TRUTH_LABELS[pred.get("truth_source", "recorded")]
    titles = (truth_label, "what-if prediction" if pred.get("actions") else "prediction")
    frames = comparison_frames(pred["truth"], pred["samples"][0][n_past - 1:], n_past, scale=scale, titles=titles)
    paths = {"gif": save_gif(frames, out_dir / f"{stem}.gif")}
    grid = prediction_grid(pred["truth"], pred["posterior"], pred["samples"], n_past, scale=grid_scale,
                           truth_label=truth_label)
    paths["grid"] = out_dir / f"{stem}_grid.png"
    grid.save(paths["grid"])
    if mp4:
        video = save_mp4(frames, out_dir / f"{stem}.mp4")
        if video is not None:
            paths["mp4"] = video
    return paths
