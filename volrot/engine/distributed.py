"""Process-group handling for `torchrun --nproc-per-node N -m volrot train ...`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; we then use DistributedDataParallel with NCCL on
GPUs and gloo on CPU. Rank 0 alone writes checkpoints and logs. Evaluation shards a split
without padding (rank r takes items r, r+N, ...) and gathers, so every item counts exactly once.

Failures:
- The process group has a timeout (`train.ddp_timeout_s`, default 600 s, instead of torch's 30
  minutes): a rank that stops answering (stuck, SIGSTOPped, dead) ends the others' wait after
  that long, and `collective_failure` turns the error into one line (`UserError`, exit 2).
- A user error found on rank 0 alone (an existing `--name`, an unwritable `--out`) is sent to
  every rank by `run_on_main`, so all ranks stop with the same `UserError`; the CLI prints it
  once, on rank 0 (other ranks exit 2 silently). torchrun itself then reports the failed
  workers and exits 1: its exit code and report are torchrun's, not volrot's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from volrot.errors import UserError


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

    def run_on_main(self, fn):
        """`fn()` on rank 0, its (picklable) result returned on every rank; a `UserError` it
        raises is raised on every rank, with the same message."""
        if not self.enabled:
            return fn()
        box: list = [None]
        if self.is_main:
            try:
                box = [("ok", fn())]
            except UserError as e:
                box = [("error", str(e))]
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise UserError(value)
        return value


def init_from_env(device: torch.device, timeout_s: float = 600.0) -> DistContext:
    """Join the process group torchrun describes, if any (idempotent). Collectives that wait
    longer than `timeout_s` fail (see `collective_failure`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=float(timeout_s)))
    return DistContext(rank=rank, world_size=world, local_rank=local)


def collective_failure(e: BaseException, ctx: DistContext, timeout_s: float) -> UserError | None:
    """One line for a collective that timed out or lost a peer; None for any other error."""
    if not ctx.enabled or not isinstance(e, RuntimeError):
        return None
    text = str(e).lower()
    if "timed out" in text or "timeout" in text:
        return UserError(
            f"rank {ctx.rank}: no answer from the other ranks for {timeout_s:g} s (train.ddp_timeout_s); "
            "a rank is stuck or gone, so the run stops (checkpoints of finished epochs are kept)"
        )
    if any(k in text for k in ("connection closed", "connection reset", "broken pipe", "connection refused")):
        return UserError(f"rank {ctx.rank}: another rank stopped (its connection closed); see that rank's message")
    return None



def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
