"""vaelab: latent-variable generative models of images you can train, measure and see."""

from vaelab.errors import VaelabError

__version__ = "0.1.0"
__all__ = ["VaelabError", "__version__", "flush_denormals"]


def flush_denormals() -> bool:
    """Make float32 arithmetic flush denormal numbers (under about 1.2e-38) to zero in this
    process: call it first thing in a script, before any torch operation.

    On some CPUs arithmetic on denormals is ~100x slower, and training makes them (Adam's
    moments of weights whose gradient stays 0, a VampPrior's backward pass); flushed, only bits
    below float32's resolution change. The mode is per thread and a new thread copies it from
    its creator, so it reaches torch's worker threads only if they start after this call (they
    start at torch's first parallel op); the `vaelab` command does this for you. Returns
    whether every torch worker thread flushes now (False: they had started, or the CPU has no
    such mode); training warns where they do not.
    """
    from vaelab.training.runtime import flush_at_start  # imports torch: not at vaelab's import

    return flush_at_start()
