"""Process settings that make CPU training faster: the allocator's thresholds (the results are
unchanged) and flushing denormal floats (results change only below float32's 1.2e-38).

glibc serves allocations above M_MMAP_THRESHOLD with fresh mmap'd pages and returns freed heap
above M_TRIM_THRESHOLD to the system, so every step of a small network pays page faults for its
~1 MB activations and gradients. Raising both thresholds keeps that memory in the heap (about
16-64 MB more resident) and removes the faults; `vaelab bench` measures the effect.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD = 16 * 1024 * 1024
TRIM_THRESHOLD = 64 * 1024 * 1024


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return ok and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


GRAIN = 32768  # elements per thread below which torch runs an elementwise op on one thread
# Test operands as bit patterns: a float literal would already be 0 where this thread flushes.
DENORMAL_BITS, SMALL_NORMAL_BITS = 0x000AE398, 0x0082AB1E  # 1e-39 and 1.2e-38 in float32


def _flushes(threads: int) -> bool:
    """A denormal operand times 2^30 (a normal result unless DAZ reads the operand as 0) and
    1.2e-38 * 0.9 (a denormal result unless FTZ writes 0) both come out 0, in every part of an
    op split over `threads` threads; the result is read as bits, not compared as floats."""
    n = GRAIN * threads if threads > 1 else 1
    bits = torch.tensor([DENORMAL_BITS, SMALL_NORMAL_BITS], dtype=torch.int32).repeat(n)
    factors = torch.tensor([2.0**30, 0.9]).repeat(n)  # each thread's part has both kinds
    return not bool(bits.view(torch.float32).mul(factors).view(torch.int32).any())


def denormals_flushed() -> bool:
    """Whether float32 arithmetic flushes denormals, in and out (DAZ and FTZ), on this thread
    and on every thread of torch's intra-op pool."""
    return _flushes(max(1, torch.get_num_threads()))


def _openmp_library() -> ctypes.CDLL | None:
    """The OpenMP runtime torch runs its intra-op pool on, where the process has one with
    libgomp's entry points (GNU libgomp; LLVM's and Intel's runtimes export them too); torch's
    own copy first, should another library have loaded a second runtime."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "omp" in line.rsplit("/", 1)[-1]}
    except OSError:  # not Linux
        return None
    torch_lib = str(Path(torch.__file__).parent)
    for path in sorted(paths, key=lambda p: (not p.startswith(torch_lib), p)):
        if Path(path).name.startswith(("libgomp", "libomp", "libiomp")):
            lib = ctypes.CDLL(path)  # loaded already: the same copy, not a second one
            if hasattr(lib, "GOMP_parallel"):
                return lib
    return None


def set_flush_on_pool(mode: bool) -> bool:
    """`torch.set_flush_denormal(mode)` on each thread of the OpenMP pool torch runs its CPU
    ops on (the calling thread's pool: each thread that starts parallel work has its own);
    False where that runtime is not found.

    The mode is a per-thread register (MXCSR) that a thread copies from its creator when it
    starts, so pool threads started before the mode was set keep the old one, and a loop
    flushed in its main thread only still makes denormals in the other threads' parts of
    every op. This runs a parallel region of torch's thread count (libgomp's GOMP_parallel)
    whose every thread sets the mode on itself. (Idle threads beyond that count, left from an
    earlier larger `torch.set_num_threads`, are not reached.)
    """
    lib = _openmp_library()
    if lib is None:
        return False
    # The callback runs on each pool thread and takes the GIL there; ctypes releases it around
    # the foreign call, and GOMP_parallel returns when every thread has run it.
    callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _: torch.set_flush_denormal(mode))
    lib.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    lib.GOMP_parallel.restype = None
    lib.GOMP_parallel(ctypes.cast(callback, ctypes.c_void_p), None, torch.get_num_threads(), 0)
    return True


@contextlib.contextmanager
def flush_denormals() -> Iterator[bool]:
    """Float32 values under 2^-126 (about 1.2e-38) count as 0, in and out, inside the block
    (the CPU's FTZ and DAZ modes, `torch.set_flush_denormal`), on this thread, on torch's
    worker threads and on threads started inside the block. Afterwards every pool thread and
    this one have this thread's mode from before the block (nothing changes where every
    thread flushed already). Yields whether denormals are now flushed everywhere (x86 with
    SSE3; elsewhere a no-op that yields False).

    Why: an Intel Xeon multiplies denormal operands ~200x slower than normal ones (a 2,000 x
    2,000 float32 matmul of denormals took 10.8 s against 51 ms flushed, measured 2026-11-26),
    and training makes them: the VampPrior's backward pass (a mixture component far from every
    sample gets a gradient weight of e^-87 and less), and Adam's first moment of a weight whose
    gradient stays 0 (a pixel that is 0 in every image), which shrinks by 0.9 a step and is
    denormal after a few hundred steps: with half of torch's threads unflushed, the MLP VAE's
    Adam update took 1.5-1.9 ms instead of 0.34. Such a value is smaller than one unit in the
    last place of any loss, density or weight it could add to, so only the bits of results
    that were already under float32's resolution can change.
    """
    if denormals_flushed():
        yield True
        return
    before = _flushes(1)  # this thread's own mode
    supported = torch.set_flush_denormal(True)
    if supported:  # the pool's threads too: those started before now kept their own mode
        set_flush_on_pool(True)
    try:
        yield denormals_flushed()
    finally:
        if supported:
            set_flush_on_pool(before)
            torch.set_flush_denormal(before)
