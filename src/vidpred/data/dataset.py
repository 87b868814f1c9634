"""``VideoWindows``: the torch Dataset every trainer and evaluator reads.

One item per sequence per epoch: a window of ``window`` consecutive steps,
frames float32 ``(T, 3, 64, 64)`` in [0, 1] and raw conditions float32
``(T, 7)`` = concat(action, end-effector position). Evaluation uses the fixed
start 0 (the assignment scores the first 12 frames); training may draw a random
start whose value is a pure function of ``(seed, epoch, index)``, so a resumed
run sees exactly the windows it would have seen.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vidpred.data.cache import open_cache
from vidpred.data.layout import SEQ_LEN, list_sequences, read_conditions, read_frames
from vidpred.errors import ConfigError

DEFAULT_WINDOW = 12  # 2 past + 10 future frames, the assignment's protocol


class PngReader:
    """Reads windows straight from the PNG/CSV folders (no cache)."""

    def __init__(self, sequences: list[tuple[str, Path]]):
        self.names = [name for name, _ in sequences]
        self.dirs = [d for _, d in sequences]

    def read(self, index: int, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (length, 3, 64, 64) and float32 (length, 7)."""
        frames = read_frames(self.dirs[index], start, length).transpose(0, 3, 1, 2)
        conds = read_conditions(self.dirs[index])[start:start + length]
        return frames, conds


class VideoWindows(Dataset):
    """Fixed-length windows over the sequences of one split."""

    def __init__(self, reader, window: int = DEFAULT_WINDOW, random_start: bool = False,
                 seed: int = 0, split: str = "", root: str | os.PathLike = ""):
        self.reader = reader
        self.window = _check_window(window)
        self.random_start = bool(random_start)
        self.seed = int(seed)
        self.epoch = 0
        self.split = split
        self.root = str(root)
        self.seq_len = SEQ_LEN

    def __len__(self) -> int:
        return len(self.reader.names)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def start(self, index: int) -> int:
        """First step of the window for ``index`` in the current epoch."""
        if not self.random_start:
            return 0
        # A fresh generator keyed on (seed, epoch, index): no hidden RNG state,
        # so the offset does not depend on worker count or iteration order.
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        return int(rng.integers(0, self.seq_len - self.window + 1))

    def sequence_name(self, index: int) -> str:
        return self.reader.names[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sequences")
        frames, conds = self.reader.read(index, self.start(index), self.window)
        frames = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)  # (T, 3, 64, 64)
        conds = torch.from_numpy(np.array(conds, dtype=np.float32))  # (T, 7)
        return frames, conds

    def __repr__(self) -> str:
        return (f"VideoWindows(root={self.root!r}, split={self.split!r}, n={len(self)}, "
                f"window={self.window}, random_start={self.random_start}, seed={self.seed})")


def _check_window(window) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or not 1 <= window <= SEQ_LEN:
        raise ConfigError(f"window must be an integer in 1..{SEQ_LEN}, got {window!r}")
    return int(window)


def open_split(root: str | os.PathLike, split: str, window: int = DEFAULT_WINDOW,
               random_start: bool = False, use_cache: bool = True, seed: int = 0) -> VideoWindows:
    """Open one split of a processed-layout dataset as a :class:`VideoWindows`.

    use_cache: read the packed cache (built on first use, rebuilt when the
    source changed); otherwise decode PNGs on every access.
    Raises ConfigError for a window outside 1..30, DataError for a missing or
    empty split (naming the path) or a damaged cache.
    """
    _check_window(window)
    if use_cache:
        reader = open_cache(root, split)
    else:
        reader = PngReader(list_sequences(root, split))
    return VideoWindows(reader, window=window, random_start=random_start, seed=seed, split=split, root=root)
