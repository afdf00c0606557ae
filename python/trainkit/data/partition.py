"""Which global sequences a rank reads at a step: pure arithmetic, the contract in docs/architecture.md.

Step s consumes global sequences [s*G, (s+1)*G). Rank r of W takes the contiguous slice
[s*G + r*G/W, s*G + (r+1)*G/W), split into G/(W*m) micro-batches of m sequences. Every rank gets the
same number of micro-batches at every step (DDP never waits on a rank that ran dry), no sequence goes
to two ranks, and a global batch is the same sequences whatever W is.
"""

from __future__ import annotations

from dataclasses import dataclass


class PartitionError(ValueError):
    """The batch geometry does not divide evenly."""


@dataclass(frozen=True)
class BatchGeometry:
    global_batch: int  # G: sequences per optimizer step, all ranks together
    micro_batch: int  # m: sequences per forward pass on one rank
    world_size: int  # W

    def __post_init__(self):
        if min(self.global_batch, self.micro_batch, self.world_size) < 1:
            raise PartitionError(f"batch geometry must be positive: {self}")
        if self.global_batch % (self.micro_batch * self.world_size):
            raise PartitionError(
                f"global batch {self.global_batch} is not divisible by micro-batch {self.micro_batch} x "
                f"world size {self.world_size}"
            )

    @property
    def per_rank(self) -> int:
        return self.global_batch // self.world_size

    @property
    def accumulation(self) -> int:
        return self.per_rank // self.micro_batch


def rank_slice(step: int, rank: int, g: BatchGeometry) -> tuple[int, int]:
    """[start, stop) global sequence indices rank `rank` reads at `step`."""
    if not 0 <= rank < g.world_size:
        raise PartitionError(f"rank {rank} is outside world size {g.world_size}")
    if step < 0:
        raise PartitionError(f"step {step} is negative")
    start = step * g.global_batch + rank * g.per_rank
    return start, start + g.per_rank


def micro_batches(step: int, rank: int, g: BatchGeometry) -> list[tuple[int, int]]:
    """The rank's slice at `step` cut into `accumulation` ranges of `micro_batch` sequences."""
    start, _ = rank_slice(step, rank, g)
    return [(start + i * g.micro_batch, start + (i + 1) * g.micro_batch) for i in range(g.accumulation)]


def step_of(sequences_consumed: int, g: BatchGeometry) -> int:
    """The next step given the global count of sequences consumed (must be a whole number of steps)."""
    if sequences_consumed < 0:
        raise PartitionError(f"sequences_consumed {sequences_consumed} is negative")
    if sequences_consumed % g.global_batch:
        raise PartitionError(
            f"sequences_consumed {sequences_consumed} is not a whole number of global batches of {g.global_batch}"
        )
    return sequences_consumed // g.global_batch
