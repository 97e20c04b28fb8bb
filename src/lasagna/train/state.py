"""A run's training state on disk: `checkpoints/step-N` folders that a resume or an export reads back.

A folder holds the weights (all of them, or only the trainable ones with a fingerprint of where the frozen ones come
from), the optimizer state (or DeepSpeed ZeRO's partitions, `zero.py`), the schedule, the RNG and `state.json`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import write_atomic_dir
from ..checkpoint import CheckpointError, check_keys, read_weights, save_weights
from .config import TrainConfig
from .zero import PARTITION_GLOB


@dataclass
class TrainState:
    step: int = 0
    seconds: float = 0.0


def checkpoints(out: Path) -> list[Path]:
    """The `checkpoints/step-N` folders of run folder `out`, oldest first."""
    return sorted((Path(out) / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def _trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def init_fingerprint(folder: str | Path) -> dict:
    """What a trainable-only checkpoint's frozen weights are read back from: the folder, and a digest of its config
    and of its weight files' names and sizes (cheap: a 7B folder is not hashed whole)."""
    root = Path(folder).resolve()
    if not (root / "config.json").exists():
        raise FileNotFoundError(f"init_from {root} is not a checkpoint folder of ours (no config.json)")
    digest = hashlib.sha256((root / "config.json").read_bytes())
    for f in sorted(root.glob("*.safetensors")):
        digest.update(f"{f.name}:{f.stat().st_size}".encode())
    return {"path": str(root), "digest": digest.hexdigest()}


def save_training_state(
    out: Path, model, optimizer, scheduler, state: TrainState, cfg: TrainConfig, partitions: Sequence[Path] = ()
) -> Path:
    """Atomic folder with everything a resume needs; only the newest `cfg.keep_last` are kept.

    With `checkpoint_weights: trainable` it keeps only the trainable tensors and a fingerprint of init_from, where the
    frozen ones come back from (checked on load). Under DeepSpeed ZeRO the optimizer state is the ranks' `partitions`
    (`zero.save_partition`), moved in, instead of `optimizer.pt`.
    """
    tensors = model.state_dict()
    info = {"step": state.step, "seconds": state.seconds, "weights": cfg.checkpoint_weights}
    info["lr_scale"] = cfg.optim.lr_scale
    if cfg.checkpoint_weights == "trainable":
        names = _trainable_names(model)
        tensors = {k: v for k, v in tensors.items() if k in names}
        info["init_from"] = init_fingerprint(cfg.init_from)

    def fill(tmp: Path) -> None:
        save_weights(tensors, tmp)
        if partitions:
            for part in partitions:
                part.rename(tmp / part.name)
        else:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(torch.get_rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(info))

    path = write_atomic_dir(out / "checkpoints" / f"step-{state.step:07d}", fill, overwrite=True)
    for old in checkpoints(out)[: -cfg.keep_last]:
        shutil.rmtree(old)
    return path


def read_state(path: Path) -> dict:
    """A checkpoint folder's state.json; a damaged one is ValueError naming it."""
    file = path / "state.json"
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file}: not the JSON object a checkpoint writes ({err})") from err
    if not isinstance(info, dict):
        raise ValueError(f"{file}: not the JSON object a checkpoint writes (a {type(info).__name__})")
    return info


def load_checkpoint_weights(path: Path, model, init_from: str | None) -> dict:
    """A checkpoint's weights into `model`, strictly: all of them, or exactly the trainable ones, whose frozen
    complement must come from the same init_from as when they were saved; returns state.json."""
    info = read_state(path)
    trainable_only = info.get("weights", "full") == "trainable"
    if trainable_only:
        saved = info["init_from"]
        now = init_fingerprint(init_from) if init_from else None
        if now is None or now["digest"] != saved["digest"]:
            raise CheckpointError(
                f"{path} holds only the trainable weights; the frozen ones were {saved['path']} "
                f"(digest {saved['digest'][:12]}), but init_from is now "
                + (f"{now['path']} (digest {now['digest'][:12]})" if now else "unset")
            )
    state = read_weights(path)
    expected = _trainable_names(model) if trainable_only else set(model.state_dict())
    check_keys(expected, set(state), str(path))
    model.load_state_dict(state, strict=not trainable_only)
    return info


def load_training_state(path: Path, model, optimizer, scheduler, cfg: TrainConfig, zero: bool = False) -> TrainState:
    """Weights, optimizer (unless `zero`: DeepSpeed's partitions load after `prepare`, `zero.load_partitions`),
    scheduler and RNG from a checkpoint folder, before `accelerator.prepare`."""
    saved_zero = any(path.glob(PARTITION_GLOB))
    if saved_zero != zero:
        said = ("under DeepSpeed ZeRO", "without DeepSpeed") if saved_zero else ("without DeepSpeed", "under ZeRO")
        raise ValueError(f"{path} was saved {said[0]}; it cannot be resumed {said[1]}: launch it as it was launched")
    info = load_checkpoint_weights(path, model, cfg.init_from)
    # why: the optimizer's saved groups carry their lrs, so a changed lr_scale would be silently undone
    if info.get("lr_scale", {}) != cfg.optim.lr_scale:
        raise ValueError(
            f"{path} was trained with optim.lr_scale {info.get('lr_scale', {})}, the config now says "
            f"{cfg.optim.lr_scale}: resume with the same, or start a new run"
        )
    if not zero:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    torch.set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return TrainState(step=int(info["step"]), seconds=float(info["seconds"]))
