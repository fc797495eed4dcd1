"""One job across several devices: diffusers' context parallelism (Ulysses attention) over torch.distributed.

A multi-device worker is launched the standard way, `torchrun --nproc_per_node=N -m vidfactory.cli worker`.
Every rank loads the same pipeline on its own device and runs every generation together; the transformer
splits each sequence across the ranks and all-to-alls the attention heads, so an N-device job holds 1/N
of the activations per device and the ranks end with the same frames. Rank 0 (the leader) is the only one
that talks to the queue: it sends each request to the followers, and its decision to cancel, taken at
each denoising step, is the decision of every rank (otherwise one rank would wait forever in a collective
the others left).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist

__all__ = [
    "DevicePlan",
    "ParallelError",
    "agree_with_leader",
    "enable_context_parallel",
    "end_process",
    "join_group",
    "leave_group",
    "receive_from_leader",
    "send_to_followers",
]

DEVICES_MAX = 16
_leader_rank = 0


class ParallelError(Exception):
    """A multi-device worker that cannot start: a launch or model that context parallelism cannot split."""


@dataclass(frozen=True)
class DevicePlan:
    """Where this process sits among the devices that run one job together."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> DevicePlan:
        """torchrun's WORLD_SIZE / RANK / LOCAL_RANK; one device when they are absent."""
        env = os.environ if environ is None else environ
        try:
            plan = cls(int(env.get("WORLD_SIZE", "1")), int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")))
        except ValueError as exc:
            raise ParallelError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers: {exc}") from exc
        if not 1 <= plan.world_size <= DEVICES_MAX or not 0 <= plan.rank < plan.world_size:
            raise ParallelError(f"a worker spans 1 to {DEVICES_MAX} devices with 0 <= RANK < WORLD_SIZE, got "
                                f"WORLD_SIZE={plan.world_size} RANK={plan.rank}")
        return plan

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    @property
    def is_leader(self) -> bool:
        return self.rank == _leader_rank

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def join_group(plan: DevicePlan) -> None:
    """Join torchrun's process group (NCCL between GPUs, gloo on CPUs); a no-op for one device."""
    if not plan.parallel or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(plan.local_rank)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def end_process(code: int) -> NoReturn:
    """Exit a rank that has left its group, skipping the interpreter's teardown.

    After `leave_group` a rank has nothing left to finish but its logs. What the teardown would still do is
    free the pipeline's collective state and the backend's objects in whatever order modules are cleared,
    racing the backend's own threads: now and then a SIGABRT ("terminate called without an active
    exception") after the job was recorded, which torchrun reports as the whole worker failing.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def enable_context_parallel(pipeline: Any, plan: DevicePlan) -> None:
    """Split every transformer of `pipeline` (both experts of a two-expert model) across the plan's devices.

    Ulysses splits attention heads, so the head count must divide evenly; ring attention would need a kernel
    that returns the log-sum-exp (FlashAttention and friends), which the CPU path lacks.
    """
    from diffusers import ContextParallelConfig

    assert dist.is_initialized(), "join_group before enable_context_parallel"
    for name in ("transformer", "transformer_2"):
        transformer = getattr(pipeline, name, None)
        if transformer is None:
            continue
        heads = transformer.config.num_attention_heads
        if heads % plan.world_size:
            raise ParallelError(f"{name} has {heads} attention heads, which {plan.world_size} devices cannot "
                                f"share evenly (Ulysses context parallelism splits heads)")
        with _cpu_counts_as_one_device():
            transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=plan.world_size))


@contextlib.contextmanager
def _cpu_counts_as_one_device() -> Iterator[None]:
    """diffusers places rank r on device r % torch.accelerator.device_count(), which is 0 on a host with no
    accelerator (a division by zero); there every rank's device is the CPU, so count it as one."""
    if torch.accelerator.device_count() > 0:
        yield
        return
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def send_to_followers(message: Any) -> None:
    """The leader hands every follower the same message (a generation request, or None to stop)."""
    dist.broadcast_object_list([message], src=_leader_rank)


def receive_from_leader() -> Any:
    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=_leader_rank)
    return box[0]


def agree_with_leader(decision: bool) -> bool:
    """Every rank calls this at the same point; all of them get the leader's `decision`."""
    flag = torch.tensor([1 if decision else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.broadcast(flag, src=_leader_rank)
    return bool(flag.item())
