"""A packed, memory-mapped cache per split, so training does not decode PNGs.

Per split the cache folder holds::

    frames.u8      raw uint8, shape (N, 30, 3, 64, 64) - channel-first so a
                   window is one contiguous slice
    conds.npy      float32 (N, 30, 7), raw conditions
    manifest.json  format, shape, sequence names, condition statistics, and a
                   fingerprint of the source (relative paths + sizes + mtimes)

Location: ``<root>/.cache/<split>/``; when the dataset root is read-only,
``$VIDPRED_CACHE/<hash of root>/<split>/`` (default ``~/.cache/vidpred``).

A cache is built in a temporary sibling folder and renamed into place, so an
interrupted build never leaves a folder that passes as valid. A cache whose
fingerprint no longer matches the source is *stale* and is rebuilt on load.
A cache whose files disagree with its own manifest (truncated, corrupt) is an
error: it means something outside vidpred damaged it, and we say so rather
than silently papering over it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vidpred.data.layout import (
    COND_DIM, IMAGE_SIZE, SEQ_LEN, check_workers, list_sequences, read_sequence, replace_dir, split_dir,
)
from vidpred.errors import DataError

CACHE_FORMAT = 1
CACHE_DIRNAME = ".cache"
FRAMES_FILE = "frames.u8"
CONDS_FILE = "conds.npy"
MANIFEST_FILE = "manifest.json"
FRAME_SHAPE = (SEQ_LEN, 3, IMAGE_SIZE, IMAGE_SIZE)  # per sequence, channel-first
STD_FLOOR = 1e-6


def fingerprint(root: str | os.PathLike, split: str) -> str:
    """Hash of every file under the split folder: relative path, size, mtime.

    Cheap (stat only, no reads) yet changes whenever a file is added, removed,
    replaced or rewritten.
    """
    base = split_dir(root, split)
    digest = hashlib.sha256(f"vidpred-cache-{CACHE_FORMAT}".encode())
    lines = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            lines.append(f"{os.path.relpath(path, base)}\t{st.st_size}\t{st.st_mtime_ns}")
    for line in sorted(lines):
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _fallback_base() -> Path:
    env = os.environ.get("VIDPRED_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vidpred"


def candidate_dirs(root: str | os.PathLike, split: str) -> list[Path]:
    """Where a split's cache may live: inside the root first, then the per-user fallback."""
    root = Path(root).resolve()
    root_hash = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return [root / CACHE_DIRNAME / split, _fallback_base() / root_hash / split]


def _is_writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def load_manifest(cache_dir: Path) -> dict:
    path = cache_dir / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != CACHE_FORMAT:
            raise ValueError(f"format {manifest.get('format')}, expected {CACHE_FORMAT}")
        return manifest
    except (ValueError, AttributeError) as err:
        raise DataError(
            f"{path}: corrupt cache manifest ({err}); rebuild with `vidpred data cache ROOT --rebuild`"
        ) from None


def verify_files(cache_dir: Path, manifest: dict) -> None:
    """Check the cache files agree with the manifest (catches truncation)."""
    n = manifest["n"]
    frames_path = cache_dir / FRAMES_FILE
    expected = n * int(np.prod(FRAME_SHAPE))
    actual = frames_path.stat().st_size if frames_path.exists() else 0
    if actual != expected:
        raise DataError(
            f"{frames_path}: truncated cache, expected {expected} bytes, got {actual}; "
            "rebuild with `vidpred data cache ROOT --rebuild`"
        )
    conds_path = cache_dir / CONDS_FILE
    try:
        conds = np.load(conds_path, mmap_mode="r")
        shape = tuple(conds.shape)
    except (OSError, ValueError) as err:
        raise DataError(
            f"{conds_path}: corrupt cache file ({err}); rebuild with `vidpred data cache ROOT --rebuild`"
        ) from None
    if shape != (n, SEQ_LEN, COND_DIM):
        raise DataError(f"{conds_path}: expected shape {(n, SEQ_LEN, COND_DIM)}, got {shape}")


def ensure_cache(root: str | os.PathLike, split: str, rebuild: bool = False,
                 verify_only: bool = False, workers: int | None = None,
                 quiet: bool = False) -> Path:
    """Return a fresh, verified cache folder for ``split``, building it if needed.

    verify_only: never build; a missing or stale cache is a DataError.
    """
    if workers is not None:
        check_workers(workers)
    sequences = list_sequences(root, split)  # DataError on a missing or empty split
    source_fp = fingerprint(root, split)
    stale = None
    if not rebuild:
        for cache_dir in candidate_dirs(root, split):
            if not (cache_dir / MANIFEST_FILE).exists():
                continue
            manifest = load_manifest(cache_dir)
            if manifest.get("fingerprint") == source_fp:
                verify_files(cache_dir, manifest)
                return cache_dir
            if verify_only:
                raise DataError(
                    f"{cache_dir / MANIFEST_FILE}: stale cache, expected source fingerprint "
                    f"{source_fp[:12]}, got {str(manifest.get('fingerprint'))[:12]}; "
                    "refresh with `vidpred data cache ROOT`"
                )
            stale = cache_dir
    if verify_only:
        raise DataError(f"{split_dir(root, split)}: no cache built; build with `vidpred data cache ROOT`")
    primary, fallback = candidate_dirs(root, split)
    target = primary if _is_writable(Path(root)) else fallback
    if stale is not None and not quiet:
        print(f"vidpred: cache {stale} is stale (source changed); rebuilding in {target}", file=sys.stderr)
    build_cache(sequences, target, split, source_fp, workers=workers, quiet=quiet, rebuild=rebuild)
    return target


def _read_for_cache(seq_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    frames, conds = read_sequence(seq_dir)
    return frames.transpose(0, 3, 1, 2), conds  # (30, 64, 64, 3) -> (30, 3, 64, 64)


def build_cache(sequences: list[tuple[str, Path]], target: Path, split: str, source_fp: str,
                workers: int | None = None, quiet: bool = False, rebuild: bool = False) -> None:
    """Decode every sequence once into a temp folder, then rename it to ``target``; unless
    ``rebuild``, a cache of the same source that another process put there meanwhile is kept."""
    n = len(sequences)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        frames = np.memmap(tmp / FRAMES_FILE, dtype=np.uint8, mode="w+", shape=(n, *FRAME_SHAPE))
        conds = np.empty((n, SEQ_LEN, COND_DIM), np.float32)
        dirs = [d for _, d in sequences]
        workers = min(workers or os.cpu_count() or 1, 8)
        bar = tqdm(total=n, desc=f"caching {split}", unit="seq", disable=True if quiet else None, file=sys.stderr)
        # Decoding PNGs dominates; fan out across processes for big splits only,
        # since a pool costs more than it saves on a few dozen sequences.
        if workers > 1 and n >= 64:
            with get_context().Pool(workers) as pool:
                for i, (f, c) in enumerate(pool.imap(_read_for_cache, dirs, chunksize=16)):
                    frames[i], conds[i] = f, c
                    bar.update()
        else:
            for i, d in enumerate(dirs):
                frames[i], conds[i] = _read_for_cache(d)
                bar.update()
        bar.close()
        frames.flush()
        del frames
        np.save(tmp / CONDS_FILE, conds)
        flat = conds.reshape(-1, COND_DIM).astype(np.float64)
        manifest = {
            "format": CACHE_FORMAT,
            "split": split,
            "n": n,
            "frames_file": FRAMES_FILE,
            "frames_shape": [n, *FRAME_SHAPE],
            "frames_dtype": "uint8",
            "fingerprint": source_fp,
            "names": [name for name, _ in sequences],
            # Statistics of the raw conditions over every step of this split.
            # Training normalises with the *train* split's values (condition_stats).
            "cond_mean": flat.mean(axis=0).tolist(),
            "cond_std": np.maximum(flat.std(axis=0), STD_FLOOR).tolist(),
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest))
        if rebuild:
            replace_dir(tmp, target)
        else:
            # Two processes may build the same new cache at once (two trainings started on one
            # new dataset): the first one renamed into place is kept, so a reader of it never
            # has its files moved away. The rename fails where any folder is there already.
            try:
                os.rename(tmp, target)
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if not _built_by_another(target, source_fp):  # a stale cache: replaced
                    replace_dir(tmp, target)
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _built_by_another(target: Path, source_fp: str) -> bool:
    """Whether ``target`` holds a finished cache of the same source (``source_fp``)."""
    try:
        return load_manifest(target).get("fingerprint") == source_fp
    except (OSError, DataError):  # none there, or a damaged one: not a cache to keep
        return False


class CacheReader:
    """Reads windows out of a built cache. Opens the memmap lazily so the object
    pickles cheaply into DataLoader workers (each opens its own map)."""

    def __init__(self, cache_dir: Path, manifest: dict):
        self.cache_dir = Path(cache_dir)
        self.n = manifest["n"]
        self.names = manifest["names"]
        self._frames = None
        self.conds = np.load(self.cache_dir / CONDS_FILE)  # small: N*30*7 floats

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_frames"] = None
        return state

    def read(self, index: int, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (length, 3, 64, 64) and float32 (length, 7)."""
        if self._frames is None:
            self._frames = np.memmap(self.cache_dir / FRAMES_FILE, dtype=np.uint8, mode="r",
                                     shape=(self.n, *FRAME_SHAPE))
        frames = np.array(self._frames[index, start:start + length])  # copy out of the map
        return frames, self.conds[index, start:start + length]


def open_cache(root: str | os.PathLike, split: str, quiet: bool = False) -> CacheReader:
    cache_dir = ensure_cache(root, split, quiet=quiet)
    return CacheReader(cache_dir, load_manifest(cache_dir))


def condition_stats(root: str | os.PathLike, quiet: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (float32, shape (7,)) of the raw conditions over the TRAIN split.

    Stored in the train cache's manifest (built here if needed); std >= 1e-6.
    """
    cache_dir = ensure_cache(root, "train", quiet=quiet)
    manifest = load_manifest(cache_dir)
    mean = np.asarray(manifest["cond_mean"], np.float32)
    std = np.maximum(np.asarray(manifest["cond_std"], np.float32), STD_FLOOR)
    return mean, std
