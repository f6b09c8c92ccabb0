"""How a run's blocks of rows become kernel executions, and where each execution's outputs go:
pure bookkeeping, no device and no threads (host/device.py runs the plan)."""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from faast.contract.memory import ClientMemory, Rows

MIN_ROWS_PER_EXECUTION = 256  # below this, one CU is faster than several


@dataclass
class Execution:
    """One execution's share of a run: `rows` rows from row `start` on, as pieces of the run's blocks
    (piece i: rows [offsets[i], offsets[i] + len(pieces[i])) of block owners[i]), packed where they lie."""

    start: int
    rows: int
    pieces: list[Rows]
    owners: list[int]
    offsets: list[int]


def executions(blocks: list[Rows], step: int) -> Iterator[Execution]:
    """The run's blocks cut into executions of `step` rows (the last one shorter), in order."""
    pieces: list[Rows] = []
    owners: list[int] = []
    offsets: list[int] = []
    start = filled = 0
    for owner, block in enumerate(blocks):
        at = 0
        while at < len(block):
            take = min(step - filled, len(block) - at)
            pieces.append(block[at : at + take])
            owners.append(owner)
            offsets.append(at)
            at += take
            filled += take
            if filled == step:
                yield Execution(start, filled, pieces, owners, offsets)
                start, filled, pieces, owners, offsets = start + filled, 0, [], [], []
    if filled:
        yield Execution(start, filled, pieces, owners, offsets)


def execution_rows(total: int, units: int, calls: int, capacity: int) -> int:
    """Rows per execution for a call of `total` rows on `units` CUs with `calls` calls under way. A
    call alone on the device spreads its rows over all CUs; with other calls under way, those keep the
    other CUs busy, so a call takes executions as large as fit (one that fits runs in the calling
    thread: each hand-off to a CU's thread and back costs two wake-ups). Never beyond `capacity`."""
    spread = -(-total // units) if calls == 1 else total
    return min(capacity, max(MIN_ROWS_PER_EXECUTION, spread))


@dataclass(frozen=True)
class Target:
    """Where output rows [first, first + len(out)) of an execution are unpacked: `out`, rows of block
    `owner`'s outputs (a client's shared memory when that block has a destination)."""

    first: int
    out: np.ndarray | ClientMemory
    owner: int


@dataclass(frozen=True)
class Outputs:
    """Where a run's outputs go: each block's array (its destination, or its rows of one result array
    for the others); `whole`, that result array when no block has a destination (an execution's rows
    are then its rows)."""

    blocks: list[np.ndarray | ClientMemory]
    whole: np.ndarray | None

    @classmethod
    def of(
        cls, blocks: list[Rows], into: list[ClientMemory | None] | None, width: int, dtype, in_place: bool
    ) -> "Outputs":
        """Outputs of `width` columns for `blocks`; `into`: a destination per block (None: the result
        array), only where the layout unpacks in place."""
        destined = into if into is not None else [None] * len(blocks)
        if len(destined) != len(blocks):
            raise ValueError("a run's destinations are one per block")
        if any(out is not None for out in destined) and not in_place:
            raise ValueError("this kernel does not unpack its outputs in place")
        undestined = sum(len(block) for block, out in zip(blocks, destined, strict=True) if out is None)
        result = np.empty((undestined, width), dtype)
        outputs: list[np.ndarray | ClientMemory] = []
        at = 0
        for block, out in zip(blocks, destined, strict=True):
            if out is None:
                outputs.append(result[at : at + len(block)])
                at += len(block)
            elif out.shape != (len(block), width) or out.dtype != dtype:
                raise ValueError("a destination holds its block's outputs")
            else:
                outputs.append(out)
        return cls(outputs, result if all(out is None for out in destined) else None)

    def targets(self, execution: Execution) -> list[Target]:
        """Where an execution's output rows are unpacked: all at once without destinations, else piece
        by piece into their blocks' arrays."""
        if self.whole is not None:
            return [Target(0, self.whole[execution.start : execution.start + execution.rows], execution.owners[0])]
        targets, first = [], 0
        for piece, owner, offset in zip(execution.pieces, execution.owners, execution.offsets, strict=True):
            targets.append(Target(first, self.blocks[owner][offset : offset + len(piece)], owner))
            first += len(piece)
        return targets
