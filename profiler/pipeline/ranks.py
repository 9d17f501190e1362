"""The ranks of a launcher (``torchrun``, ``accelerate launch``): who this process is, and how ranks meet.

Under a launcher every rank runs the same profile: all fine-tune the reference together (DDP, or FSDP / ZeRO
through an accelerate config, as Trainer sets up from the launcher's environment), each scores the examples of
its own shard into a part file, and rank 0 alone writes the table (datatrove's ``_run_for_rank`` with one
writer). One process, no launcher, is the world of one: every call here is then a no-op.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ranks:
    """This process's place among the launcher's processes."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable)."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_ok(self, ok: bool) -> bool:
        """Whether every rank says ``ok``: a rank that failed makes the others stop too, instead of waiting."""
        if self.world == 1:
            return ok
        import torch.distributed as dist

        flags: list[Any] = [None] * self.world
        dist.all_gather_object(flags, ok)
        return all(flags)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (it builds a cache), then the others (they read it)."""
        if not self.main:
            self.barrier()
        try:
            yield
        finally:
            if self.main:
                self.barrier()


def launcher_ranks() -> Ranks:
    """The ranks the launcher's environment describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), with the
    process group started (gloo on the CPU, NCCL on GPUs, as accelerate picks); one process without one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # joins the launcher's process group (as Trainer will)
    return Ranks(state.process_index, state.num_processes, state.local_process_index)
