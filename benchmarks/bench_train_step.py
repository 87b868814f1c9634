"""Time one training step at the assignment's setting and compare with the reference schedule.

Setting: batch 12, 12 frames (2 past + 10 future), full-width codecs, g 128, z 64,
rnn 256, predictor 2 layers, learned prior; Adam step included.

``ours``      : vidpred's rollout (every ground-truth frame encoded once in one batched
                pass; each LSTM run over the window in one call; one batched decode), and its
                codecs' convolutions that are matrix products run as such on CPU.
``reference`` : the same modules driven the way edenton/svg's ``train()`` drives them:
                per time step, encode x_{t-1} and x_t separately (every frame is
                encoded twice), step the LSTM cells, decode one frame; PyTorch's
                default NCHW layout and its convolution kernels for every layer. Its
                fp32 step takes 2.0-2.9 s (DCGAN) and 12.8-18 s (VGG) on this project's
                2-core machines (RESULTS.md); edenton/svg's own code took 2.4-2.8 s (DCGAN).

Each configuration runs in a fresh process so that peak memory (max RSS on CPU,
``torch.cuda.max_memory_allocated`` on CUDA) is its own.

    python benchmarks/bench_train_step.py                      # CPU, both codecs, ours as vidpred train runs it
    python benchmarks/bench_train_step.py --amp none bf16 auto # ours also in fp32 and bf16
    python benchmarks/bench_train_step.py --device cuda --amp none bf16 --compile on   # on a GPU

The reference always runs in fp32 with PyTorch's defaults. ``ours`` runs as ``vidpred
train`` does: ``train.amp=auto`` resolved on this device, ``train.compile``'s default,
fused Adam, the allocator settings of ``vidpred/runtime.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

import torch


def reference_loss(model, frames, conds, n_past: int):
    """The reference's schedule of computation (edenton/svg train.py), same layers as ours."""
    B, T = frames.shape[:2]
    step_cond, _, _ = model.embed_conditions(conds, n_past)
    post = prior = pred = None
    mse = kld = 0.0
    skip = None
    for t in range(1, T):
        h, skip_t = model.encoder(frames[:, t - 1])  # encode x_{t-1} ...
        h_target = model.encoder(frames[:, t])[0]  # ... and x_t again at the next step
        if t - 1 < n_past:
            skip = skip_t
        h, h_target = h[:, None], h_target[:, None]
        mu, logvar, post = model.posterior[0](h_target, post)
        mu_p, logvar_p, prior = model.prior[0](h, prior)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        g, pred = model.predictor(torch.cat([h, z, step_cond[:, t - 1 : t]], -1), pred)
        x_hat = model.decoder(g[:, 0], skip)
        mse = mse + ((x_hat.float() - frames[:, t]) ** 2).mean()
        kl = 0.5 * (logvar_p - logvar + (logvar.exp() + (mu - mu_p) ** 2) / logvar_p.exp() - 1)
        kld = kld + kl.float().sum(-1).mean()
    return mse + 1e-4 * kld


def ours_loss(model, frames, conds, n_past: int):
    from vidpred.models.svg import rollout

    out = rollout(model, frames, conds, n_past)
    mse = ((out.pred.float() - frames[:, 1:]) ** 2).mean(dim=(0, 2, 3, 4)).sum()
    return mse + 1e-4 * out.kl.float().sum(-1).mean(0).sum()


def run_one(codec: str, impl: str, amp: str, device: str, steps: int, warmup: int, compile: bool | None = None) -> dict:
    """One configuration in this process. ``amp`` none / bf16 / auto (ours: resolved as ``vidpred
    train`` does); ``compile`` None: ours with ``train.compile``'s default, the reference never."""
    from vidpred.config import ModelConfig, TrainConfig
    from vidpred.models.codecs import Conv2d, ConvTranspose2d
    from vidpred.models.svg import SVG
    from vidpred.runtime import CompiledOrEager, tune_allocator
    from vidpred.training.trainer import resolve_amp

    dev = torch.device(device)
    if impl == "ours":
        tune_allocator()  # as the vidpred command does
        amp = resolve_amp(dev, amp)
        compile = TrainConfig.compile if compile is None else compile
    else:
        amp = "none" if amp == "auto" else amp
        compile = False
    torch.manual_seed(0)
    # The reference keeps PyTorch's default NCHW layout; ours uses the model's default (auto).
    fmt = "contiguous" if impl == "reference" else "auto"
    model = SVG(ModelConfig(codec=codec, width=64, g_dim=128, z_dim=64, rnn_size=256, memory_format=fmt)).to(dev)
    if impl == "reference":  # PyTorch's convolution kernels for every layer, as the reference code has them
        for m in model.modules():
            if isinstance(m, (Conv2d, ConvTranspose2d)):
                m.matmul = False
    # ours: vidpred train's fused Adam; the reference: PyTorch's default (a loop over parameters)
    opt = torch.optim.Adam(model.parameters(), lr=0.002, betas=(0.9, 0.999), fused=impl == "ours")
    frames = torch.rand(12, 12, 3, 64, 64, device=dev)
    conds = torch.randn(12, 12, 7, device=dev)
    loss_fn = CompiledOrEager(ours_loss if impl == "ours" else reference_loss, compile, dev, "benchmark")
    times = []
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = loss_fn(model, frames, conds, 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {"codec": codec, "impl": impl, "amp": amp, "compile": loss_fn.active, "device": device,
            "s_per_step": sec, "seq_per_s": 12 / sec, "peak_mib": peak, "steps": steps,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": machine(dev)}


def machine(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        with open("/proc/cpuinfo") as f:
            name = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} CPUs"


def failure_line(stderr: str) -> str:
    """The exception line of a child's traceback (``SomeError: what``), else its last line:
    torch's errors often end with a line of advice that names no cause."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b:?", line)]
    return (errors or lines or ["no output"])[-1][:300]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--codecs", nargs="+", default=["dcgan64", "vgg64"])
    ap.add_argument("--amp", nargs="+", default=["auto"],
                    help="precisions of ours: auto (vidpred train's default), none, bf16 (default: auto)")
    ap.add_argument("--compile", choices=("default", "on", "off"), default="default",
                    help="torch.compile for ours (default: train.compile's default)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps, median reported (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--one", nargs=3, metavar=("CODEC", "IMPL", "AMP"),
                    help="time one configuration in this process and print it as JSON")
    args = ap.parse_args()
    comp = {"default": None, "on": True, "off": False}[args.compile]
    if args.one:
        print(json.dumps(run_one(*args.one, args.device, args.steps, args.warmup, comp)))
        return
    rows = []
    jobs = [(codec, "reference", "none") for codec in args.codecs]
    jobs += [(codec, "ours", amp) for codec in args.codecs for amp in args.amp]
    for codec, impl, amp in sorted(jobs, key=lambda j: args.codecs.index(j[0])):
        cmd = [sys.executable, __file__, "--one", codec, impl, amp, "--device", args.device,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--compile", args.compile]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(f"{codec} {impl} {amp}: failed: {failure_line(res.stderr)}")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        if not rows:
            print(f"machine: {r['machine']}; torch {r['torch']}, {r['threads']} threads; "
                  f"median of {args.steps} steps after {args.warmup} warm-up")
        rows.append(r)
        print(f"{codec:8s} {impl:9s} amp={r['amp']:5s} compile={'on' if r['compile'] else 'off':3s} "
              f"{r['s_per_step']:7.3f} s/step {r['seq_per_s']:7.2f} seq/s peak {r['peak_mib']:8.0f} MiB", flush=True)
    print("\nspeed-up of ours over the reference schedule in fp32 (same machine, same layers):")
    ref = {r["codec"]: r for r in rows if r["impl"] == "reference"}
    for r in rows:
        if r["impl"] == "ours" and r["codec"] in ref:
            print(f"  {r['codec']} ours amp={r['amp']} compile={'on' if r['compile'] else 'off'}: "
                  f"{ref[r['codec']]['s_per_step'] / r['s_per_step']:.2f}x")


if __name__ == "__main__":
    main()
