"""DeepSpeed ZeRO's optimizer state in our checkpoints.

Under ZeRO each rank holds only its own partition of the optimizer state and of the fp32 master weights, in
DeepSpeed's layout, so the main process's `optimizer.state_dict()` is a fraction of the state, and it carries objects
(the loss scaler, an enum, slice maps) that `torch.load(weights_only=True)` refuses. So under DeepSpeed every rank
writes its own partition, those objects left out, as `optimizer-rank{R}.pt` of the checkpoint folder; a resume reads
all of them and hands the list to DeepSpeed, which takes its rank's partition and fp32 master weights from it (under
DeepSpeed's bf16 the model file holds the weights only in bf16).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..atomic import write_atomic_file

PARTITION_GLOB = "optimizer-rank*.pt"
# state_dict() entries that are not plain data; DeepSpeed keeps its current ones when they are missing on load
_OBJECTS = ("loss_scaler", "zero_stage", "param_slice_mappings", "universal_checkpoint_info")


def deepspeed_requested() -> bool:
    """`accelerate launch` with a DeepSpeed config says so through this variable (read before the Accelerator is
    built: on CPU accelerate ignores DeepSpeed unless told it is not a CPU run)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def uses_zero(accelerator) -> bool:
    return accelerator.state.deepspeed_plugin is not None


def partition_name(rank: int) -> str:
    return f"optimizer-rank{rank:05d}.pt"


def save_partition(optimizer, folder: Path, rank: int) -> Path:
    """This rank's ZeRO partition, as plain data, into `folder` (atomically); returns its path."""
    zero = optimizer.optimizer  # accelerate's wrapper -> DeepSpeed's ZeRO optimizer
    state = {k: v for k, v in zero.state_dict().items() if k not in _OBJECTS}
    scaler = getattr(zero, "loss_scaler", None)
    if scaler is not None and hasattr(scaler, "cur_scale"):  # fp16's dynamic loss scale, so it does not restart
        state["loss_scale"] = float(scaler.cur_scale)
    path = folder / partition_name(rank)
    write_atomic_file(path, lambda tmp: torch.save(state, tmp))
    return path


def load_partitions(checkpoint: Path, optimizer, world: int) -> None:
    """Every rank's saved partition into DeepSpeed's ZeRO optimizer; the same number of ranks must resume."""
    files = sorted(checkpoint.glob(PARTITION_GLOB))
    if len(files) != world:
        raise ValueError(
            f"{checkpoint} holds the ZeRO optimizer state of {len(files)} ranks; resume it with as many "
            f"processes (now {world})"
        )
    states = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
    zero = optimizer.optimizer
    zero.load_state_dict(states, load_optimizer_states=True, load_from_fp32_weights=True)
    scale = states[0].get("loss_scale")
    if scale is not None and hasattr(zero.loss_scaler, "cur_scale"):
        zero.loss_scaler.cur_scale = scale
