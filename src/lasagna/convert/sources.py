"""Reading released weight files lazily, and writing ours shard by shard.

A 7B model in bf16 is ~14 GB, so nothing here holds a whole model: `.bin`/`.pth` files are memory-mapped
(`torch.load(..., mmap=True, weights_only=True)`), safetensors files are read one tensor at a time, and the writer
flushes a shard as soon as it reaches its size limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..checkpoint import DEFAULT_SHARD_BYTES, INDEX, WEIGHTS

# Layouts a HF folder may use, in order of preference: (index file, single file).
_LAYOUTS = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)


def load_torch_file(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, memory-mapped: tensors are read from disk only when touched."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise ValueError(f"cannot read {path} as a torch state dict: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a flat name -> tensor state dict")
    return state


class WeightFile:
    """One weight file (.bin/.pth or .safetensors): names, shapes, and tensors on demand."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"weight file not found: {self.path}")
        self._torch = None if self.path.suffix == ".safetensors" else load_torch_file(self.path)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        if self._torch is not None:
            return {k: tuple(v.shape) for k, v in self._torch.items()}
        with safe_open(str(self.path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a mapping

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        if self._torch is not None:
            yield from self._torch.items()
            return
        with safe_open(str(self.path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - not a mapping
                yield key, f.get_tensor(key)

    def close(self) -> None:
        self._torch = None


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a HF folder: the shards its index lists, or its single weight file."""
    folder = Path(folder)
    for index, single in _LAYOUTS:
        if (folder / index).is_file():
            try:
                weight_map = json.loads((folder / index).read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{folder / index}: not a weight index ({e})") from None
            return [folder / name for name in sorted(set(weight_map.values()))]
        if (folder / single).is_file():
            return [folder / single]
    expected = ", ".join(name for pair in _LAYOUTS for name in pair)
    raise FileNotFoundError(f"{folder} holds no weights: expected one of {expected}")


def read_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Names and shapes across files (memory-mapped, so cheap); a name in two files is an error."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        wf = WeightFile(path)
        for name, shape in wf.shapes().items():
            if name in shapes:
                raise ValueError(f"tensor {name!r} appears in more than one weight file ({path})")
            shapes[name] = shape
        wf.close()
    return shapes


class ShardWriter:
    """Writes our weights as `model.safetensors`, or shards + `model.safetensors.index.json` (checkpoint.py's layout).

    Tensors are buffered up to `max_shard_bytes` and flushed under a provisional name; `close` gives the shards
    their final `model-0000k-of-0000n.safetensors` names once n is known.
    """

    def __init__(self, folder: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.folder = Path(folder)
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._parts: list[tuple[Path, list[str]]] = []
        self._names: set[str] = set()
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """`tensor` must own its storage (safetensors refuses views); callers pass fresh copies."""
        if name in self._names:
            raise ValueError(f"tensor {name!r} written twice")
        self._names.add(name)
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        self._pending[name] = tensor
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        path = self.folder / f".part-{len(self._parts):05d}.safetensors"
        save_file(self._pending, str(path), metadata={"format": "pt"})
        self._parts.append((path, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> int:
        """Finish the files; returns the number of tensors written."""
        if self._pending or not self._parts:
            self._flush()
        n = len(self._parts)
        if n == 1:
            self._parts[0][0].rename(self.folder / WEIGHTS)
            return len(self._parts[0][1])
        weight_map = {}
        for k, (path, names) in enumerate(self._parts, 1):
            final = f"model-{k:05d}-of-{n:05d}.safetensors"
            path.rename(self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.folder / INDEX).write_text(json.dumps(index, indent=1))
        return len(weight_map)
