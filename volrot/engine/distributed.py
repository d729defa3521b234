"""Process-group handling for `torchrun --nproc-per-node N -m volrot train ...`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; we then use DistributedDataParallel with NCCL on
GPUs and gloo on CPU. Rank 0 alone writes checkpoints and logs. Evaluation shards a split
without padding (rank r takes items r, r+N, ...) and gathers, so every item counts exactly once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: list[int]) -> list[int]:
        return indices[self.rank :: self.world_size]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather_objects(self, obj):
        """All ranks' `obj` in rank order (a one-element list without a process group)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sync_buffers(self, model) -> None:
        """Give every rank rank 0's buffers (BN running stats drift apart during DDP training)."""
        if self.enabled:
            for b in model.buffers():
                dist.broadcast(b, src=0)

    def broadcast_object(self, obj):
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group torchrun describes, if any (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world, local_rank=local)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
