"""Data-parallel training under torchrun: the trainer's hooks for one process or many.

`torchrun --nproc-per-node N -m vaelab train ...` starts N processes (ranks) that each hold the
whole training set in memory and the same model. The trainer asks `current()` for its place:
`Single` (one process: every hook is the identity, so single-process training is unchanged) or
`Ranks` (torch.distributed, Gloo on CPU and NCCL for CUDA tensors). With ranks:

- `--batch-size` is the global batch: every rank draws the same permutation of the epoch (its
  seed is (seed, epoch)) and takes its contiguous part of each global batch, so no image is seen
  twice or skipped, and a run means the same optimisation whatever the number of ranks.
- After each phase's backward the phase's gradients are averaged over the ranks, each weighted
  by its share of the batch (the epoch's last batch may split unevenly); the loss rides in the
  same all-reduce, so every rank skips the same non-finite steps and the ranks stay identical.
- The epoch's metric sums and image counts are summed over the ranks; rank 0 alone evaluates
  and writes the run folder (config, checkpoints, metrics, events, figures, report).
- Each rank has its own reparameterization and binarization noise (rank 0 keeps the
  single-process streams); a checkpoint holds every rank's RNG states, so a resume with the
  same number of ranks continues bit for bit.
- Every collective waits at most `timeout_s`; a dead or silent peer is one PeerLost error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vaelab.errors import VaelabError
from vaelab.training.schedules import derived_seed

DEFAULT_TIMEOUT_S = 600.0  # longer than any gap between collectives: an evaluation, a write


class PeerLost(VaelabError):
    """Another rank died or stopped answering: this one stops instead of hanging."""


def elastic_restart() -> bool:
    """True in workers that torchrun restarted after a failure (--max-restarts)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


class Single:
    """One process: the data-parallel hooks do nothing."""

    rank, world_size, local_rank = 0, 1, 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        return torch.device(name)

    def seed(self, seed: int, *parts: int) -> int:
        """The seed of this rank's stream for one purpose (rank 0: the single-process seed)."""
        return derived_seed(seed, *parts)

    def shard(self, idx: Tensor) -> tuple[Tensor, float]:
        """This rank's part of a global batch and its share of the batch's images."""
        return idx, 1.0

    def average_gradients(self, params: list[nn.Parameter], loss: Tensor, share: float) -> Tensor:
        """Average the gradients of `params` over the ranks; the batch's loss (for its check)."""
        return loss

    def sum_metrics(self, sums: dict, counts: dict) -> tuple[dict, dict]:
        return sums, counts

    def gather_rng(self, rng: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every rank's RNG states, for rank 0's checkpoint."""
        return rng

    def own_rng(self, rng: dict[str, Tensor]) -> dict[str, Tensor] | None:
        """This rank's RNG states from a checkpoint's (None: the run had no such rank)."""
        return rng

    def broadcast_parameters(self, model: nn.Module) -> None:
        pass

    def from_main(self, value: float) -> float:
        """Rank 0's `value` (a clock reading), so that every rank decides alike."""
        return value

    def barrier(self, what: str) -> None:
        pass

    @contextlib.contextmanager
    def main_first(self, what: str) -> Iterator[None]:
        """Run the block on each node's first rank (say, a download), then on the others."""
        yield


class Ranks(Single):
    """One of `world_size` processes that torch.distributed connects."""

    def __init__(
        self, rank: int, world_size: int, local_rank: int, timeout_s: float, owns_group: bool
    ):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.timeout_s, self.owns_group = timeout_s, owns_group

    def device(self, name: str) -> torch.device:
        device = torch.device(name)
        if device.type != "cuda":
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise VaelabError(
                f"rank {self.rank} is process {self.local_rank} on its node, which has "
                f"{torch.cuda.device_count()} GPU(s): start at most one process per GPU "
                "(torchrun --nproc-per-node)"
            )
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def seed(self, seed: int, *parts: int) -> int:
        return derived_seed(seed, *parts, self.rank) if self.rank else derived_seed(seed, *parts)

    def shard(self, idx: Tensor) -> tuple[Tensor, float]:
        mine = idx.tensor_split(self.world_size)[self.rank]  # sizes differ by at most one
        if len(mine):
            return mine, len(mine) / len(idx)
        # The epoch's last batch has fewer images than there are ranks: this rank computes on a
        # stand-in image with weight 0, so every rank runs the same phases and collectives.
        return idx[:1], 0.0

    @contextlib.contextmanager
    def collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except RuntimeError as err:  # Gloo and NCCL: "connection reset by peer", "timed out"
            raise PeerLost(
                f"rank {self.rank} of {self.world_size} stopped while {what}: another rank "
                f"died or did not answer within {self.timeout_s:g} s (see its log); the last "
                "complete checkpoint is kept"
            ) from err

    def average_gradients(self, params: list[nn.Parameter], loss: Tensor, share: float) -> Tensor:
        # Why not DistributedDataParallel: the AAE's phases each step a subset of the parameters
        # (the discriminator phase leaves the autoencoder without gradients; the generator
        # phase's backward also reaches the discriminator, which that phase does not step).
        # DDP would need its forward to be each phase's loss, find_unused_parameters' graph
        # walk every backward, and would all-reduce gradients no optimizer uses; its overlap of
        # communication with the backward pass buys little on these small nets. Averaging
        # exactly the phase's parameters that have gradients (the same set on every rank: a
        # phase's graph does not depend on the data) is one flat all-reduce per phase, which
        # also carries the loss (every rank then skips the same non-finite steps) and weights
        # uneven shards exactly.
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([loss.reshape(1), *(g.reshape(-1) for g in grads)])
        if share:
            flat.mul_(share)  # sum over ranks of share * (mean over the shard) = batch mean
        else:
            flat.zero_()  # a stand-in adds nothing, not even a NaN
        with self.collective("averaging gradients"):
            dist.all_reduce(flat)
        for grad, average in zip(grads, flat[1:].split([g.numel() for g in grads]), strict=True):
            grad.copy_(average.view_as(grad))
        return flat[0]

    def sum_metrics(self, sums: dict, counts: dict) -> tuple[dict, dict]:
        keys = sorted(sums)  # the same keys on every rank: all run every step's phases
        flat = torch.tensor([float(sums[k]) for k in keys] + [counts[k] for k in keys],
                            dtype=torch.float64)  # fmt: skip
        with self.collective("summing the epoch's metrics"):
            dist.all_reduce(flat)
        values = flat.tolist()
        n = len(keys)
        return dict(zip(keys, values[:n], strict=True)), dict(zip(keys, values[n:], strict=True))

    def gather_rng(self, rng: dict[str, Tensor]) -> dict[str, Tensor]:
        names = sorted(rng)  # CPU byte tensors of the same sizes on every rank
        flat = torch.cat([rng[k].reshape(-1) for k in names])
        parts = [torch.empty_like(flat) for _ in range(self.world_size)]
        with self.collective("saving a checkpoint"):
            dist.all_gather(parts, flat)
        gathered = dict(rng)  # rank 0's states under the single-process names
        for r in range(1, self.world_size):
            chunks = parts[r].split([rng[k].numel() for k in names])
            gathered.update({f"rank{r}.{k}": c.clone() for k, c in zip(names, chunks, strict=True)})
        return gathered

    def own_rng(self, rng: dict[str, Tensor]) -> dict[str, Tensor] | None:
        if self.rank == 0:
            return {k: v for k, v in rng.items() if not k.startswith("rank")}
        prefix = f"rank{self.rank}."
        return {k[len(prefix) :]: v for k, v in rng.items() if k.startswith(prefix)} or None

    def broadcast_parameters(self, model: nn.Module) -> None:
        with torch.no_grad(), self.collective("taking rank 0's weights"):
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, 0)

    def from_main(self, value: float) -> float:
        flat = torch.tensor([value], dtype=torch.float64)  # on the CPU, like the barrier
        with self.collective("sharing rank 0's clock"):
            dist.broadcast(flat, 0)
        return flat.item()

    def barrier(self, what: str) -> None:
        with self.collective(what):
            dist.all_reduce(torch.zeros(1))  # on the CPU (Gloo) whatever the training device

    @contextlib.contextmanager
    def main_first(self, what: str) -> Iterator[None]:
        if self.local_rank:
            self.barrier(what)
        yield
        if not self.local_rank:
            self.barrier(what)


_current: Single | None = None


def setup(timeout_s: float | None = None) -> Single:
    """This process's place: `Ranks` under torchrun (WORLD_SIZE > 1; joins the process group
    with a timeout of `timeout_s` seconds, default DEFAULT_TIMEOUT_S), else `Single`."""
    global _current
    if timeout_s is not None and not timeout_s > 0:
        raise VaelabError(f"the timeout is {timeout_s!r} s: expected a positive number of seconds")
    if _current is None:
        _current = _from_env(DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)
    return _current


def current() -> Single:
    """What the trainer calls: the process's place, set up (default timeout) on first use."""
    return setup()


def _from_env(timeout_s: float) -> Single:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():  # the caller joined a group already
        world_size = dist.get_world_size()
        if world_size == 1:
            return Single()
        return Ranks(dist.get_rank(), world_size, local_rank, timeout_s, owns_group=False)
    if world_size == 1:
        return Single()
    if "RANK" not in os.environ:
        raise VaelabError(f"WORLD_SIZE is {world_size} but RANK is not set: start with torchrun")
    rank = int(os.environ["RANK"])
    _join(rank, world_size, timeout_s)
    return Ranks(rank, world_size, local_rank, timeout_s, owns_group=True)


def _join(rank: int, world_size: int, timeout_s: float) -> None:
    """Join the process group that torchrun's environment describes (MASTER_ADDR, ...)."""
    # torch's compiler (imported by the first optimizer step) keeps references to the process
    # group that exists when it is first imported: after that, destroy_process_group cannot
    # free the group, Gloo's threads outlive it, and one of them releasing a tensor while the
    # interpreter exits aborts the process ("terminate called without an active exception").
    # Resetting the compiler's (still empty) state is the public call that imports it now.
    torch.compiler.reset()
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    timeout = timedelta(seconds=timeout_s)
    try:
        store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
        # torchrun's agent keeps its store across restarts, and the process group's keys (each
        # rank's address) do not change between attempts: without a prefix of its own, a
        # restarted rank can read a dead rank's address and fail to connect.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"vaelab/attempt{attempt}", store)
        dist.init_process_group(
            backend, store=store, rank=rank, world_size=world_size, timeout=timeout
        )
    except (RuntimeError, ValueError) as err:
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        reason = str(err).partition("\n")[0]
        raise VaelabError(
            f"rank {rank} could not join the other {world_size - 1} rank(s) at {where} within "
            f"{timeout_s:g} s ({reason})"
        ) from None


def shutdown() -> None:
    """Leave the process group that `setup` joined (a no-op for one process)."""
    global _current
    if isinstance(_current, Ranks) and _current.owns_group and dist.is_initialized():
        dist.destroy_process_group()
    _current = None
