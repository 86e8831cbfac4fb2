"""One process or many (``accelerate launch``): rank, sharding, gathering, barriers.

    accelerate launch --multi_gpu --num_processes 2 run.py model=tiny   # CPU: gloo backend

On a CPU-only machine ``--multi_gpu`` is what spawns the processes; the accelerate state is then
created with ``cpu=True`` so it picks gloo. Agent generation is sharded by whole batches (so the
outputs are identical to a single-process run), training runs data-parallel through TRL, and the
audience/judge calls (asynchronous HTTP, already concurrent) run on rank 0.
"""
from __future__ import annotations

import os
from datetime import timedelta


class Dist:
    def __init__(self, timeout_s: int = 86400) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.state = None
        if self.world > 1:
            import torch
            from accelerate import PartialState

            self.state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=timeout_s))
        self.rank = self.state.process_index if self.state else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state:
            self.state.wait_for_everyone()

    def broadcast(self, obj):
        if not self.state:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def shard_batches(self, n_items: int, batch_size: int) -> list[int]:
        """Indices this rank handles: whole batches dealt round-robin, order kept."""
        starts = range(0, n_items, batch_size)
        mine = [s for j, s in enumerate(starts) if j % self.world == self.rank]
        return [i for s in mine for i in range(s, min(s + batch_size, n_items))]

    def gather_indexed(self, items: list[tuple[int, object]]) -> list:
        """Gather (index, item) pairs from every rank and return the items in index order."""
        if not self.state:
            return [x for _, x in sorted(items, key=lambda t: t[0])]
        from accelerate.utils import gather_object

        allp = gather_object([items])
        flat = [p for part in allp for p in part]
        return [x for _, x in sorted(flat, key=lambda t: t[0])]
