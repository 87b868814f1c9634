"""The processed BAIR layout on disk, and strict readers for its files.

Layout (the assignment's ``processed_data``; see ``shared/FORMATS.md``)::

    <root>/{train,validate,test}/<traj>/<k>/0.png .. 29.png   64x64 RGB
                                         /actions.csv          30 rows x 4
                                         /endeffector_positions.csv  30 rows x 3

Every reader here raises :class:`DataError` with one line naming the file and
what was expected versus found, so the CLI can print it without a traceback.
Arrays come back as numpy; torch only appears in ``dataset.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from vidpred.errors import ConfigError, DataError

SPLITS = ("train", "validate", "test")
SEQ_LEN = 30
IMAGE_SIZE = 64
ACTION_DIM = 4
POSITION_DIM = 3
COND_DIM = ACTION_DIM + POSITION_DIM  # condition per step = concat(action, position)
ACTIONS_FILE = "actions.csv"
POSITIONS_FILE = "endeffector_positions.csv"
TRAJ_SUFFIX = ".tfrecords"  # the assignment's folders keep the record file's name


def check_workers(workers) -> int:
    """``--workers`` of the data commands: a positive integer, or a one-line ConfigError."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    return workers


def natural_key(name: str) -> list:
    """Sort key so ``traj_256_to_511`` follows ``traj_0_to_255`` and ``10`` follows ``9``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def split_dir(root: str | os.PathLike, split: str) -> Path:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return Path(root) / split


def list_sequences(root: str | os.PathLike, split: str) -> list[tuple[str, Path]]:
    """All sequences of a split as ``(name, directory)``, in a stable natural order.

    ``name`` is ``<traj>/<k>`` with the ``.tfrecords`` suffix dropped, e.g.
    ``traj_0_to_255/3``. Hidden entries (``.cache``, temp folders) are skipped.
    """
    base = split_dir(root, split)
    if not base.is_dir():
        raise DataError(f"{base}: split directory not found (expected <root>/{split}/<traj>/<k>/)")
    sequences = []
    for traj in sorted(_visible_dirs(base), key=lambda p: natural_key(p.name)):
        traj_name = traj.name[: -len(TRAJ_SUFFIX)] if traj.name.endswith(TRAJ_SUFFIX) else traj.name
        for seq in sorted(_visible_dirs(traj), key=lambda p: natural_key(p.name)):
            sequences.append((f"{traj_name}/{seq.name}", seq))
    if not sequences:
        raise DataError(f"{base}: empty split, expected at least one <traj>/<k>/ sequence folder")
    return sequences


def _visible_dirs(path: Path) -> list[Path]:
    with os.scandir(path) as entries:
        return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]


def read_condition_csv(path: str | os.PathLike, n_cols: int, n_rows: int | None = None) -> np.ndarray:
    """Read a comma-separated, header-less numeric CSV as float32 ``(rows, n_cols)``.

    Raises DataError naming the file on a missing file, unparsable text, wrong
    shape, or non-finite values.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns on empty files; we report it ourselves
            table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (ValueError, OSError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot parse as comma-separated numbers ({detail})") from None
    rows_expected = "any" if n_rows is None else n_rows
    if table.size == 0 or table.shape[1] != n_cols or (n_rows is not None and table.shape[0] != n_rows):
        actual = "empty" if table.size == 0 else f"{table.shape[0]}x{table.shape[1]}"
        raise DataError(f"{path}: expected {rows_expected} rows x {n_cols} columns, got {actual}")
    if not np.isfinite(table).all():
        row, col = np.argwhere(~np.isfinite(table))[0]
        raise DataError(f"{path}: expected finite numbers, got {table[row, col]} at row {row + 1}, column {col + 1}")
    return table.astype(np.float32)


def read_json(path: str | os.PathLike, what: str, missing_ok: bool = False):
    """The parsed JSON of ``path``; None where there is no such file and ``missing_ok``, else
    a one-line DataError naming the file (``what`` says what was expected when it is missing)."""
    path = Path(path)
    if missing_ok and not path.is_file():
        return None
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Decode one frame as uint8 ``(64, 64, 3)``; DataError naming the file otherwise."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode now so a truncated file fails here, not later
            mode, size = img.mode, img.size
            array = np.asarray(img)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected a 64x64 RGB PNG)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot decode as an image ({err})") from None
    if size != (IMAGE_SIZE, IMAGE_SIZE) or mode != "RGB":
        raise DataError(
            f"{path}: expected a {IMAGE_SIZE}x{IMAGE_SIZE} RGB image, got {size[0]}x{size[1]} {mode}"
        )
    return array


def read_conditions(seq_dir: str | os.PathLike) -> np.ndarray:
    """Conditions of one sequence: float32 ``(30, 7)`` = concat(action, end-effector position)."""
    seq_dir = Path(seq_dir)
    actions = read_condition_csv(seq_dir / ACTIONS_FILE, ACTION_DIM, SEQ_LEN)
    positions = read_condition_csv(seq_dir / POSITIONS_FILE, POSITION_DIM, SEQ_LEN)
    return np.concatenate([actions, positions], axis=1)


def read_frames(seq_dir: str | os.PathLike, start: int = 0, length: int = SEQ_LEN) -> np.ndarray:
    """Frames ``start .. start+length-1`` of one sequence as uint8 ``(length, 64, 64, 3)``."""
    seq_dir = Path(seq_dir)
    return np.stack([read_png(seq_dir / f"{t}.png") for t in range(start, start + length)])


def read_sequence(seq_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A whole sequence, fully validated: uint8 ``(30, 64, 64, 3)`` and float32 ``(30, 7)``."""
    return read_frames(seq_dir), read_conditions(seq_dir)


def write_sequence(seq_dir: str | os.PathLike, frames: np.ndarray, actions: np.ndarray,
                   positions: np.ndarray, png_compress_level: int = 6) -> None:
    """Write one sequence in the processed layout (used by ``convert`` and ``synth``).

    frames uint8 (30, 64, 64, 3); actions (30, 4); positions (30, 3).
    """
    seq_dir = Path(seq_dir)
    seq_dir.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame, "RGB").save(seq_dir / f"{t}.png", compress_level=png_compress_level)
    # %.9g round-trips float32 exactly.
    np.savetxt(seq_dir / ACTIONS_FILE, np.asarray(actions, np.float32), delimiter=",", fmt="%.9g")
    np.savetxt(seq_dir / POSITIONS_FILE, np.asarray(positions, np.float32), delimiter=",", fmt="%.9g")


def replace_dir(new: Path, target: Path) -> None:
    """Swap ``new`` into ``target``; the old folder is moved aside before deletion.

    os.replace cannot overwrite a non-empty directory, so there is a short
    window with no ``target`` at all - which reads as "not built", never as a
    half-written folder (a dataset or a cache).
    """
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
