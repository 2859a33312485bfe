"""Process set-up for fast CPU work: threads, subnormal numbers and the C allocator.

Subnormal floats (below 1.2e-38 in float32) take a slow path through the CPU's floating-point
unit, tens of times slower per operation. IWAE's normalised weights reach them whenever the
posterior is much narrower than q: with a 2-D latent space a quarter of the weights were
subnormal and a training step took 5.5 times as long (190 against 34 ms). They contribute
nothing a float32 sum can keep, so they are flushed to zero on the CPU (`set_flush_denormal`);
the paper's runs train bit-identical models either way (tested on 1- and 2-layer runs).

glibc serves allocations above 128 KiB with fresh mmap'd pages and hands freed memory back
to the kernel, so every large temporary tensor (the logits of k samples, 3 MB at k = 50)
page-faults its way in again: ~700 faults per training step at k = 50 and ~7,500 per test
point at k = 5000, a third of the evaluation time. Raising the mmap and trim thresholds
keeps such blocks in the heap for reuse (the effect PyTorch's tuning guide gets from
jemalloc or tcmalloc). Elsewhere than glibc this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
_tuned = False


def tune_allocator() -> bool:
    """Keep blocks up to 32 MiB in the heap and stop trimming it; True if it took effect."""
    global _tuned
    if _tuned:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1 and ok
    _tuned = ok
    return ok


def setup(device: torch.device, threads: int | None = None, tf32: bool = False) -> None:
    """Call once before heavy work on `device`. TF32 matrix products (GPU only) trade
    accuracy for speed: off unless a training configuration asks for them."""
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cpu":
        tune_allocator()
        torch.set_flush_denormal(True)
    else:  # streams and graph captures without a device of their own use the current one
        torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
