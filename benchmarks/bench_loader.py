"""Loader throughput: 12-frame windows per second from PNG folders vs the packed cache.

    .venv/bin/python benchmarks/bench_loader.py                 # synthesises 128 train sequences
    .venv/bin/python benchmarks/bench_loader.py --root DATA     # an existing processed-layout root

Both paths go through the same DataLoader (batch 12, shuffled, random window
starts, no worker processes) so the ratio isolates the storage format.
Not a timed test: numbers depend on the machine; record them in RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from vidpred.data import open_split
from vidpred.data.cache import ensure_cache


def windows_per_second(ds, min_seconds: float, batch_size: int) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0,
                                         generator=torch.Generator().manual_seed(0))
    count, epoch, started = 0, 0, time.perf_counter()
    while True:
        ds.set_epoch(epoch)
        for frames, _conds in loader:
            count += frames.shape[0]
        epoch += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="processed-layout root (default: synthesise one)")
    parser.add_argument("--n", type=int, default=128, help="train sequences to synthesise without --root")
    parser.add_argument("--split", default="train")
    parser.add_argument("--window", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timing per path")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            from vidpred.data.synth import generate

            root = Path(tmp) / "data"
            started = time.perf_counter()
            generate(root, train=args.n, validate=1, test=1, seed=0, workers=2, quiet=True)
            print(f"synthesised {args.n + 2} sequences in {time.perf_counter() - started:.1f} s (2 workers)")
        started = time.perf_counter()
        ensure_cache(root, args.split, rebuild=True, quiet=True)
        print(f"cache build ({args.split}): {time.perf_counter() - started:.2f} s")

        png = open_split(root, args.split, window=args.window, random_start=True, use_cache=False)
        cached = open_split(root, args.split, window=args.window, random_start=True, use_cache=True)
        png_rate = windows_per_second(png, args.seconds, args.batch_size)
        cache_rate = windows_per_second(cached, args.seconds, args.batch_size)
        print(f"sequences: {len(png)}, window {args.window}, batch {args.batch_size}, torch threads "
              f"{torch.get_num_threads()}")
        print(f"PNG folders : {png_rate:10.1f} windows/s")
        print(f"packed cache: {cache_rate:10.1f} windows/s")
        print(f"ratio       : {cache_rate / png_rate:10.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
