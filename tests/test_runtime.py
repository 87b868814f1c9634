"""Runtime settings: the allocator (vidpred/runtime.py) and the torch.compile switch with its fallback."""

import json
import subprocess
import sys

import pytest
import torch

from vidpred import runtime
from vidpred.config import ModelConfig
from vidpred.models.svg import SVG, rollout
from vidpred.training import trainer

from test_training import tiny_cfg

# Allocate and free 20 MiB with the C library's malloc, then report how much free memory the
# heap keeps (mallinfo2's fordblks). Above glibc's default mmap threshold the block is mapped
# and unmapped again (nothing kept); with the tuned settings it stays in the heap for reuse.
FREED_KEPT = r"""
import ctypes, json, sys
sys.path[:0] = [{src!r}]
from vidpred.runtime import tune_allocator
applied = tune_allocator()
libc = ctypes.CDLL("libc.so.6")
class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
p = libc.malloc(20 * 2**20)
ctypes.memset(p, 1, 20 * 2**20)
libc.free(p)
print(json.dumps({{"applied": applied, "free_in_heap": libc.mallinfo2().fordblks}}))
"""


def _freed_kept(env_value: str) -> dict:
    import os
    from pathlib import Path

    src = str(Path(runtime.__file__).parents[1])
    env = {**os.environ, "VIDPRED_TUNE_MALLOC": env_value}
    res = subprocess.run([sys.executable, "-c", FREED_KEPT.format(src=src)], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(res.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_allocator_keeps_freed_memory_for_reuse():
    tuned, default = _freed_kept("1"), _freed_kept("0")
    assert tuned["applied"] is True and default["applied"] is False
    assert tuned["free_in_heap"] >= 20 * 2**20  # the freed block stayed in the process
    assert default["free_in_heap"] < 20 * 2**20  # glibc's default: unmapped at once


def test_compile_off_calls_the_function_itself():
    calls = []
    c = runtime.CompiledOrEager(lambda x: calls.append(x) or x + 1, False, torch.device("cpu"), "t")
    assert not c.active and c(1) == 2 and calls == [1]
    assert c.why_eager == "compiling is off"


def test_failing_compile_warns_once_and_runs_eagerly(monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("InductorError: C++ compile error\nmore detail")

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken)
    c = runtime.CompiledOrEager(lambda x: x * 2, True, torch.device("cpu"), "train run")
    assert c.active
    assert [c(3), c(4)] == [6, 8]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vidpred: warning: train run: torch.compile failed (RuntimeError: InductorError: C++ compile "
                   "error); running eagerly"]
    assert not c.active
    assert c.why_eager == "torch.compile failed (RuntimeError: InductorError: C++ compile error)"


def test_compile_without_a_cpp_compiler_warns_and_stays_eager(monkeypatch, capsys):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: pytest.fail("compile must not be tried"))
    c = runtime.CompiledOrEager(lambda x: -x, True, torch.device("cpu"), "evaluate")
    assert not c.active and c(5) == -5
    assert c.why_eager == "torch.compile is off (no C++ compiler (c++, g++ or clang++) on PATH)"
    assert "torch.compile is off (no C++ compiler" in capsys.readouterr().err


def test_train_compile_switch_logs_whether_it_compiled(synth_root, tmp_path, monkeypatch, capsys):
    """train.compile=true goes through torch.compile (spied); when it fails the run trains eagerly,
    with the same losses as a run without it, and the epoch record says it ran eagerly."""
    seen = []

    def fake_compile(fn, **kw):
        seen.append(fn)

        def fail(*a, **k):
            raise RuntimeError("backend failed")
        return fail

    plain = trainer.train(tiny_cfg(synth_root, "train.epochs=1"), tmp_path / "plain", progress=False)
    monkeypatch.setattr(torch, "compile", fake_compile)
    comp = trainer.train(tiny_cfg(synth_root, "train.epochs=1", "train.compile=true"), tmp_path / "comp",
                         progress=False)
    assert len(seen) == 1 and isinstance(seen[0], SVG)
    assert "train comp: torch.compile failed (RuntimeError: backend failed); running eagerly" in capsys.readouterr().err
    a, b = trainer.read_metrics(tmp_path / "plain"), trainer.read_metrics(tmp_path / "comp")
    assert [r["loss"] for r in a if r["kind"] == "step"] == [r["loss"] for r in b if r["kind"] == "step"]
    assert [r["compiled"] for r in b if r["kind"] == "epoch"] == [False]
    assert plain["best_val_psnr"] == comp["best_val_psnr"]


@pytest.mark.slow
def test_compiled_rollout_matches_eager():
    """A real inductor compile (C++ on CPU) of the sampling path gives the eager frames."""
    missing = runtime.compiler_missing(torch.device("cpu"))
    if missing:  # e.g. the lent GPU machines' image: CUDA toolchain, no C++ compiler
        pytest.skip(f"inductor cannot build CPU code here: {missing}")
    torch.manual_seed(0)
    cfg = ModelConfig(width=4, g_dim=16, z_dim=4, rnn_size=16, cond_embed=8, decoder="cdna", coords=True,
                      condition="causal", pose_map=True, norm="group")
    model = SVG(cfg).eval()
    frames, conds = torch.rand(2, 2, 3, 64, 64), torch.rand(2, 5, 7)
    noise = torch.randn(2, 4, 4)
    c = runtime.CompiledOrEager(rollout, True, torch.device("cpu"), "test")
    with torch.no_grad():
        eager = rollout(model, frames, conds, 2, use_posterior=False, noise=noise).pred
        compiled = c(model, frames, conds, 2, use_posterior=False, noise=noise).pred
    assert c.active, c.why_eager  # it compiled, no fallback
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
