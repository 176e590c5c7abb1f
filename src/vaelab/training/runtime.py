"""Denormal floats flushed to zero: float32 values under 2^-126 (about 1.2e-38) count as 0, in
and out (the CPU's FTZ and DAZ modes, `torch.set_flush_denormal`).

Why: an Intel Xeon multiplies denormal operands ~200x slower than normal ones (a 2,000 x 2,000
float32 matmul of denormals took 10.8 s against 51 ms flushed, measured 2026-11-26), and
training makes them: the VampPrior's backward pass (a mixture component far from every sample
gets a gradient weight of e^-87 and less), and Adam's first moment of a weight whose gradient
stays 0 (a pixel that is 0 in every image), which shrinks by 0.9 a step and is denormal after a
few hundred steps. Such a value is smaller than one unit in the last place of any loss, density
or weight it could add to, so only the bits of results that were already under float32's
resolution can change.

The mode is a per-thread register (MXCSR on x86) that a new thread copies from the thread that
starts it. torch starts the threads of its intra-op pool at its first parallel op, so the mode
set before that (`vaelab.flush_denormals()`, what the `vaelab` command does first) reaches every
pool thread; set later it reaches only the calling thread and the threads started after, and no
public API reaches the pool's threads that exist already: the trainer warns then.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

GRAIN = 32768  # elements per thread below which torch runs an elementwise op on one thread
# Test operands as bit patterns: a float literal would already be 0 where this thread flushes.
DENORMAL_BITS, SMALL_NORMAL_BITS = 0x000AE398, 0x0082AB1E  # 1e-39 and 1.2e-38 in float32
POOL_NOT_FLUSHED = (
    "torch's worker threads started before denormal floats were set to flush to zero, so they "
    "still compute with them (on some CPUs ~100x slower): call vaelab.flush_denormals() first "
    "thing in your script, before any torch operation"
)


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


def flush_at_start() -> bool:
    """Flush denormals on this thread and on every thread started after it (torch's pool, when
    this runs before torch's first parallel op); whether every pool thread flushes now (False
    where the pool had started, or on a CPU without the modes). What `vaelab.flush_denormals()`
    calls."""
    return torch.set_flush_denormal(True) and denormals_flushed()


@contextlib.contextmanager
def flush_denormals() -> Iterator[bool]:
    """Flush denormals on this thread, and on the threads it starts, inside the block (also as
    a decorator: `@flush_denormals()`); this thread's mode from before comes back afterwards.
    Warns (once) where torch's pool threads do not flush. Yields whether every thread flushes
    (False also on CPUs without the modes, where nothing changes)."""
    before = _flushes(1)
    supported = torch.set_flush_denormal(True)
    everywhere = supported and denormals_flushed()
    if supported and not everywhere:
        # A fixed location (stacklevel 1): Python's default filter shows it once a process.
        warnings.warn(POOL_NOT_FLUSHED, RuntimeWarning, stacklevel=1)
    try:
        yield everywhere
    finally:
        if supported:
            torch.set_flush_denormal(before)
