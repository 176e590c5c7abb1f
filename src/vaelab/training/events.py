"""TensorBoard scalars through tensorboardX, an optional extra (`pip install vaelab[tensorboard]`).

metrics.jsonl is a run's record; the events folder repeats its numbers for TensorBoard. Without
tensorboardX, training goes on as before and writes no events (one warning says so).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaelab.fileio import is_refusal, write_error

MISSING = (
    "tensorboardX is not installed, so this run writes no TensorBoard events (metrics.jsonl has "
    "every number): pip install 'vaelab[tensorboard]' to have them"
)


def _summary_writer(logdir: Path, purge_step: int | None) -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        warnings.warn(MISSING, stacklevel=1)  # a fixed place: shown once a process
        return None
    # TensorBoard reads a folder's files in name order and names them by the second: a writer
    # opened in the same second as the last (a quick resume) would take its name, so the suffix
    # orders them.
    suffix = f".{time.time_ns()}"
    try:
        return SummaryWriter(str(logdir), purge_step=purge_step, filename_suffix=suffix)
    except OSError as err:  # a full disk, a read-only filesystem: named like any refused write
        raise (write_error(logdir, err) if is_refusal(err) else err) from None


@contextlib.contextmanager
def scalar_writer(logdir: str | Path, purge_step: int | None = None) -> Iterator[Any]:
    """A tensorboardX SummaryWriter into `logdir` for the block, or None without tensorboardX.

    `purge_step` (on resume: the checkpoint's step) makes TensorBoard drop the events of the
    folder's earlier files at that step and after: those a killed run logged past its last
    checkpoint, which the resumed run logs again."""
    writer = _summary_writer(Path(logdir), purge_step)
    try:
        yield writer
    finally:
        if writer is not None:
            writer.close()


def log_scalars(writer: Any, record: dict[str, Any], step: int) -> None:
    """Every "section/name" number of an epoch's record at `step`, flushed to the file now."""
    for key, value in record.items():
        if "/" in key:
            writer.add_scalar(key, value, step)
    writer.flush()
