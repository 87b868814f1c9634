"""Runtime settings of the heavy commands (train, evaluate, plan, demo): the allocator and
``torch.compile``.

glibc's malloc returns large freed blocks to the kernel (``munmap`` above the mmap
threshold, heap trimming above the trim threshold) and takes them back on the next
step, so a training step pays page faults for the same few hundred MiB of
activations every time: measured on the 2-core CPU machine, about 1.3 s of system
time in 7 steps of the benchmark's dcgan64 model, and 9% of the step time
(``benchmarks/RESULTS.md``). :func:`tune_allocator` keeps freed memory in the
process instead. Peak memory is unchanged (the same blocks are reused); memory
freed at the end of a command is not returned to the system before the process
exits.

``VIDPRED_TUNE_MALLOC=0`` in the environment leaves glibc's defaults alone. Other C
libraries (macOS, musl) are left alone too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import shutil
import sys

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks below it come from the reusable heap
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of free heap
TOP_PAD = 64 * 2**20  # grow the heap in steps of 64 MiB, not page by page


def tune_allocator() -> bool:
    """Keep freed memory for reuse (see the module's docstring). Returns whether the
    settings were applied (glibc found and ``VIDPRED_TUNE_MALLOC`` not ``0``)."""
    if os.environ.get("VIDPRED_TUNE_MALLOC", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD),
          mallopt(M_TOP_PAD, TOP_PAD)]
    return all(r == 1 for r in ok)


def compiler_missing(device) -> str | None:
    """Why ``torch.compile`` cannot work here, or None: inductor builds C++ for CPU code."""
    if device.type == "cpu" and not (os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
                                     or shutil.which("clang++")):
        return "no C++ compiler (c++, g++ or clang++) on PATH"
    return None


class CompiledOrEager:
    """``fn`` (a module or function) through ``torch.compile``, or ``fn`` itself where compiling
    is off or fails: then one warning line on stderr and the eager path from then on.

    A failure is caught where it shows, in the first calls (tracing and code generation);
    errors of the computation itself (shapes, devices) are raised again by the eager call.
    """

    def __init__(self, fn, enabled: bool, device, what: str) -> None:
        import torch

        self.fn, self.what = fn, what
        self.compiled = None
        self.why_eager = None if enabled else "compiling is off"  # the reason in the warning line
        if enabled:
            why = compiler_missing(device)
            if why is None:
                self.compiled = torch.compile(fn)
            else:
                self.why_eager = f"torch.compile is off ({why})"
                _warn(f"{what}: {self.why_eager}; running eagerly")

    @property
    def active(self) -> bool:
        return self.compiled is not None

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any compiler failure means: run eagerly
                self.compiled = None
                first = (str(err).strip().splitlines() or [""])[0][:200]
                self.why_eager = f"torch.compile failed ({type(err).__name__}: {first})"
                _warn(f"{self.what}: {self.why_eager}; running eagerly")
        return self.fn(*args, **kwargs)


def _warn(line: str) -> None:
    print(f"vidpred: warning: {line}", file=sys.stderr, flush=True)
