"""Original BAIR ``softmotion30_44k`` TFRecords -> the processed layout.

Input: ``SRC/{train,test}/traj_<a>_to_<b>.tfrecords`` (or SRC may be the folder
above ``softmotion30_44k``). Each record is one 30-step sequence with, per step
i, ``{i}/image_aux1/encoded`` (raw RGB bytes, 64*64*3), ``{i}/action`` (4
floats) and ``{i}/endeffector_pos`` (3 floats). Read with the ``tfrecord``
package (pure Python + protobuf; no TensorFlow).

Output: ``DST/{train,validate,test}/traj_<a>_to_<b>.tfrecords/<k>/`` with
``0..29.png``, ``actions.csv`` and ``endeffector_positions.csv``; unlike the
reference SVG converter we keep the actions and positions.

Split choice (matching the assignment's processed_data): every original test
record file goes to ``test`` (BAIR ships one, ``traj_0_to_255``); ``validate``
is carved from the original *train* records by file name - by default the one
file ``traj_256_to_511.tfrecords`` (256 sequences) - and every other train
file goes to ``train``. A fixed file name is deterministic, needs no RNG, and
reproduces the assignment's layout exactly.

The output is written to ``DST.tmp-XXXX`` and renamed to ``DST`` only when
complete, so an interrupted conversion never leaves a DST that looks valid.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tfrecord.reader import tfrecord_iterator
from tfrecord import example_pb2
from tqdm import tqdm

from vidpred.data.layout import (
    ACTION_DIM, IMAGE_SIZE, POSITION_DIM, SEQ_LEN, check_workers, natural_key, replace_dir, write_sequence,
)
from vidpred.errors import DataError

DEFAULT_VALIDATE_RECORD = "traj_256_to_511.tfrecords"
IMAGE_KEY = "{i}/image_aux1/encoded"
ACTION_KEY = "{i}/action"
POSITION_KEY = "{i}/endeffector_pos"
FRAME_BYTES = IMAGE_SIZE * IMAGE_SIZE * 3


def _record_count_hint(path: Path) -> int:
    """``traj_<a>_to_<b>`` holds b - a + 1 records (only used for the progress bar)."""
    parts = path.name.split(".")[0].split("_")
    try:
        return int(parts[3]) - int(parts[1]) + 1
    except (IndexError, ValueError):
        return 0


def plan_conversion(src: Path, validate_record: str = DEFAULT_VALIDATE_RECORD) -> list[tuple[Path, str]]:
    """(record file, output split) for every input file, in a stable order."""
    if (src / "softmotion30_44k").is_dir():
        src = src / "softmotion30_44k"
    plan = []
    for original in ("train", "test"):
        folder = src / original
        if not folder.is_dir():
            raise DataError(f"{folder}: directory not found (expected SRC/{{train,test}}/*.tfrecords)")
        files = sorted(folder.glob("*.tfrecords"), key=lambda p: natural_key(p.name))
        if not files:
            raise DataError(f"{folder}: no *.tfrecords files found")
        for path in files:
            if original == "test":
                plan.append((path, "test"))
            else:
                plan.append((path, "validate" if path.name == validate_record else "train"))
    if not any(split == "validate" for _, split in plan):
        raise DataError(f"{src / 'train' / validate_record}: file not found (the validation split is carved "
                        "from this train record; choose another with --validate-record)")
    if not any(split == "train" for _, split in plan):
        raise DataError(f"{src / 'train'}: no train records left after carving {validate_record} for validation")
    return plan


def _floats(feature: example_pb2.Feature) -> np.ndarray:
    return np.asarray(feature.float_list.value, dtype=np.float32)


def parse_record(record: bytes, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One serialized Example -> frames uint8 (30, 64, 64, 3), actions (30, 4), positions (30, 3)."""
    example = example_pb2.Example()
    try:
        example.ParseFromString(bytes(record))
    except Exception as err:  # protobuf raises its own DecodeError type
        raise DataError(f"{where}: cannot parse record ({err})") from None
    features = example.features.feature
    frames = np.empty((SEQ_LEN, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    actions = np.empty((SEQ_LEN, ACTION_DIM), np.float32)
    positions = np.empty((SEQ_LEN, POSITION_DIM), np.float32)
    for i in range(SEQ_LEN):
        keys = (IMAGE_KEY.format(i=i), ACTION_KEY.format(i=i), POSITION_KEY.format(i=i))
        for key in keys:
            if key not in features:
                raise DataError(f"{where}: missing key {key!r} (expected {SEQ_LEN} steps)")
        image = features[keys[0]].bytes_list.value
        if len(image) != 1 or len(image[0]) != FRAME_BYTES:
            got = sum(len(v) for v in image)
            raise DataError(f"{where}: {keys[0]} expected {FRAME_BYTES} raw RGB bytes, got {got}")
        frames[i] = np.frombuffer(image[0], np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE, 3)
        for key, out, dim in ((keys[1], actions, ACTION_DIM), (keys[2], positions, POSITION_DIM)):
            values = _floats(features[key])
            if values.shape != (dim,) or not np.isfinite(values).all():
                raise DataError(f"{where}: {key} expected {dim} finite floats, got {values.tolist()}")
            out[i] = values
    return frames, actions, positions


def convert_file(task: tuple[str, str, str]) -> int:
    """Convert one record file into ``<out_root>/<split>/<file name>/<k>/``; returns the count."""
    path, split, out_root = Path(task[0]), task[1], Path(task[2])
    out_dir = out_root / split / path.name
    count = 0
    try:
        for k, record in enumerate(tfrecord_iterator(str(path))):
            frames, actions, positions = parse_record(record, f"{path} record {k}")
            write_sequence(out_dir / str(k), frames, actions, positions)
            count += 1
    except (RuntimeError, OSError) as err:  # the reader's messages for truncated files
        raise DataError(f"{path}: cannot read TFRecord after {count} records ({err})") from None
    if count == 0:
        raise DataError(f"{path}: no records (expected at least one)")
    return count


def convert(src: str | os.PathLike, dst: str | os.PathLike, validate_record: str = DEFAULT_VALIDATE_RECORD,
            workers: int = 1, overwrite: bool = False, quiet: bool = False) -> dict[str, int]:
    """Convert SRC (softmotion30_44k) into the processed layout at DST; returns sequences per split."""
    src, dst = Path(src), Path(dst)
    check_workers(workers)
    if not src.is_dir():
        raise DataError(f"{src}: directory not found (expected softmotion30_44k with train/ and test/)")
    plan = plan_conversion(src, validate_record)
    if dst.exists() and not overwrite:
        raise DataError(f"{dst}: already exists (expected a new path, or pass --force to replace it)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{dst.name}.tmp-", dir=dst.parent))
    tasks = [(str(path), split, str(tmp)) for path, split in plan]
    counts = {"train": 0, "validate": 0, "test": 0}
    try:
        total = sum(_record_count_hint(path) for path, _ in plan) or None
        bar = tqdm(total=total, desc="convert", unit="seq", disable=True if quiet else None, file=sys.stderr)
        if workers > 1:
            with get_context().Pool(workers) as pool:
                for (_, split, _), n in zip(tasks, pool.imap(convert_file, tasks)):
                    counts[split] += n
                    bar.update(n)
        else:
            for task in tasks:
                n = convert_file(task)
                counts[task[1]] += n
                bar.update(n)
        bar.close()
        replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not quiet:
        print(f"{dst}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " sequences", file=sys.stderr)
    return counts
