"""Where a model runs and in what precision: one resolution for the API and every command.

    device    auto | cpu | cuda | cuda:N | mps      auto: cuda (cuda:LOCAL_RANK when launched by torchrun or
                                                    accelerate) if there is one, else mps, else cpu
    dtype     fp32 | bf16 | fp16 (or a torch dtype)  None: as the checkpoint saved it
    quantize  None | 8bit | 4bit                    the LLM's linear layers through bitsandbytes (lasagna.quantize)

`resolve` turns the three into a `Placement`, refusing, with a message that names the setting, what the machine
cannot do: a CUDA device without CUDA, bf16 on a GPU without it, quantization on Apple's MPS (bitsandbytes has no
such backend) or without bitsandbytes installed. `add_arguments` gives a command `--device --dtype --quantize`, and
`load_options(args)` the keyword arguments of `Lasagna.from_pretrained`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import QUANTIZE_MODES as MODES

# why lazy: commands build their parsers (`add_arguments`) on every start, `lasagna --help` included, which must not
# pay for torch; torch is imported where a setting is resolved.
if TYPE_CHECKING:
    import torch

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""Our names of the weights' dtypes -> torch's."""
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


class DeviceError(ValueError):
    """A device, dtype or quantization this machine or installation cannot give."""


@dataclass(frozen=True)
class Placement:
    """A resolved request: the device, the weights' dtype (None: as saved) and the LLM's quantization (None: none)."""

    device: torch.device
    dtype: torch.dtype | None = None
    quantize: str | None = None


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:N` or `mps` (or a torch.device) -> a device this machine has."""
    import torch

    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise DeviceError(f"device must be a string or torch.device, got {type(device).__name__}")
    if name == "auto":
        if torch.cuda.is_available():
            # why: under torchrun / accelerate each process takes its own GPU, not all of them GPU 0
            rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
            return torch.device("cuda", rank) if 0 < rank < torch.cuda.device_count() else torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from err
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU (a CPU-only build, or no GPU "
                "visible); use --device cpu, or install a CUDA build of torch"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(f"device {name!r}: there {'is' if count == 1 else 'are'} {count} CUDA GPU(s), 0-based")
        return resolved
    if resolved.type == "mps":
        if not _mps_available():
            raise DeviceError(f"device {name!r}: Apple's MPS backend is not available on this machine")
        return resolved
    raise DeviceError(f"unsupported device {device!r}; use auto, cpu, cuda, cuda:N or mps")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """fp32 | bf16 | fp16 (float32, bfloat16, float16 and half too) or one of those torch dtypes; None stays None."""
    import torch

    allowed = {name: getattr(torch, attr) for name, attr in DTYPES.items()}
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in allowed.values()):
        return dtype
    if isinstance(dtype, str):
        name = dtype.strip().lower().removeprefix("torch.")
        name = _DTYPE_ALIASES.get(name, name)
        if name in allowed:
            return allowed[name]
    raise DeviceError(f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)} (or None: as saved)")


def resolve_quantize(quantize: str | None) -> str | None:
    """None | 8bit | 4bit (also int8 / nf4)."""
    if quantize is None:
        return None
    name = str(quantize).strip().lower()
    name = {"int8": "8bit", "nf4": "4bit"}.get(name, name)
    if name not in MODES:
        raise DeviceError(f"unsupported quantize {quantize!r}; use one of {', '.join(MODES)} (or None)")
    return name


def resolve(
    device: str | torch.device = "auto", dtype: str | torch.dtype | None = None, quantize: str | None = None
) -> Placement:
    """Check the three settings alone and together on this machine; the errors say what to change."""
    import torch

    from .quantize import load_bitsandbytes

    where = resolve_device(device)
    dt = resolve_dtype(dtype)
    mode = resolve_quantize(quantize)
    if where.type == "cuda" and dt == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        gpu = torch.cuda.get_device_name(where)
        raise DeviceError(f"dtype bf16: the GPU {gpu!r} ({where}) does not support bfloat16; use --dtype fp16")
    if mode is not None:
        if where.type == "mps":
            raise DeviceError(
                f"quantize {mode} on device mps: bitsandbytes has no MPS backend; use --device cpu with --quantize, "
                "or drop --quantize (--dtype fp16 halves the memory on mps)"
            )
        try:
            load_bitsandbytes()
        except ValueError as err:
            raise DeviceError(str(err)) from err
    return Placement(where, dt, mode)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --dtype and --quantize, as every command that loads a model takes them."""
    g = parser.add_argument_group("device and precision (docs/devices.md)")
    g.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    g.add_argument("--dtype", choices=sorted(DTYPES), help="weights' dtype (default: as the checkpoint saved them)")
    g.add_argument(
        "--quantize",
        choices=MODES,
        help="load the LLM's linear layers in 8-bit (LLM.int8) or 4-bit (NF4) through bitsandbytes "
        "(pip install 'lasagna[quantize]'); the vision tower and SAM stay in --dtype",
    )


def load_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `Lasagna.from_pretrained` for parsed `add_arguments` options. They are checked
    (`resolve`) where the model loads, before any weight is read: a command stays free of torch until then."""
    return {"device": args.device, "dtype": args.dtype, "quantize": args.quantize}
