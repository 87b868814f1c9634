"""Data: the processed BAIR layout, its packed cache, and the torch Dataset.

    from vidpred.data import open_split, condition_stats, read_condition_csv, VideoWindows
    ds = open_split(root, "train", window=12, random_start=True, seed=0)
    frames, conds = ds[i]   # float32 (T, 3, 64, 64) in [0, 1], raw float32 (T, 7)
    mean, std = condition_stats(root)   # (7,) each, from the train split

Producers of the layout: ``convert`` (BAIR TFRecords) and ``synth`` (the
embedded pymunk pushing world). ``commands`` wires ``vidpred data ...``.
"""

from vidpred.data.cache import condition_stats
from vidpred.data.dataset import DEFAULT_WINDOW, VideoWindows, open_split
from vidpred.data.layout import COND_DIM, SEQ_LEN, SPLITS, read_condition_csv

__all__ = [
    "COND_DIM",
    "DEFAULT_WINDOW",
    "SEQ_LEN",
    "SPLITS",
    "VideoWindows",
    "condition_stats",
    "open_split",
    "read_condition_csv",
]
