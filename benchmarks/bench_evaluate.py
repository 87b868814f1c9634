"""Evaluation throughput: prior samples per second, one rollout per sample vs one batched pass,
and the whole of ``evaluate()`` (sampling, the posterior run and every metric).

Times ``vidpred.evaluation.evaluate.predict_samples`` (the batched pass over
sequences x samples) against the loop it replaced (one rollout of the batch per
sample), then ``evaluate()`` on the same sequences, on an untrained model of the demo's
preset (``synth-cpu``, or ``--config``), 16 sequences x 10 samples, 2 -> 10 frames,
random frames, on the CPU (or ``--device cuda``), median of ``--repeats`` timings each;
checks that the two passes give the same frames.

    .venv/bin/python benchmarks/bench_evaluate.py [--device cuda]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from vidpred.config import load_config
from vidpred.evaluation.evaluate import evaluate, predict_samples, sample_noise
from vidpred.models.svg import SVG, rollout


@torch.no_grad()
def loop(model, frames, conds, n_past, indices, samples, seed):
    """The former evaluation: one rollout of the whole batch per sample."""
    T = conds.shape[1]
    shape = (T - 1, model.cfg.noise_dim)
    out = []
    for s in range(samples):
        noise = torch.stack([sample_noise(seed, int(i), s, shape) for i in indices]).to(frames.device)
        r = rollout(model, frames[:, :n_past], conds, n_past, use_posterior=False, noise=noise)
        out.append(r.pred[:, n_past - 1 :].float().clamp(0, 1))
    return torch.stack(out, 1)


class Sequences:
    """The random sequences as the dataset ``evaluate()`` reads."""

    def __init__(self, frames, conds) -> None:
        self.frames, self.conds = frames, conds

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i):
        return self.frames[i], self.conds[i]

    def sequence_name(self, i) -> str:
        return f"random_{i}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="synth-cpu")
    ap.add_argument("--sequences", type=int, default=16)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = SVG(load_config(args.config).model).eval().to(device)
    B, S, n_past = args.sequences, args.samples, 2
    frames, conds = torch.rand(B, 12, 3, 64, 64), torch.randn(B, 12, 7)
    frames, conds = frames.to(device), conds.to(device)
    idx = list(range(B))
    a = loop(model, frames, conds, n_past, idx, S, 0)
    b = predict_samples(model, frames, conds, n_past, idx, S, 0)
    diff = (a - b).abs().max().item()
    where = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"{where}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"config {args.config}; {B} sequences x {S} samples; max |batched - loop| = {diff:.2e}")
    data = Sequences(frames, conds)
    runs = (("loop over samples", lambda: loop(model, frames, conds, n_past, idx, S, 0)),
            ("batched (B*S)", lambda: predict_samples(model, frames, conds, n_past, idx, S, 0)),
            ("evaluate() whole", lambda: evaluate(model, data, n_past, samples=S, batch_size=B, progress=False)))
    for name, fn in runs:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"{name:18s} {med:7.3f} s  {B * S / med:8.1f} samples/s")


if __name__ == "__main__":
    main()
