"""8-bit and 4-bit linear layers through bitsandbytes, swapped in from the outside.

The paper's model knows nothing of quantization: a loaded model's `nn.Linear` layers are replaced, one by one, by
bitsandbytes' `Linear8bitLt` (LLM.int8(): int8 weights with one fp32 scale per output row) or `Linear4bit` (NF4:
two weights per byte with one fp32 absmax per block of 64), each quantized from the full-precision weight it replaces
and placed straight on the target device, so a GPU never holds the 16-bit LLM. Loading stays strict: the checkpoint's
weights are checked against the unquantized model before any layer is swapped.

`quantized_bytes` gives the storage of one quantized weight as bitsandbytes keeps it (`benchmarks/memory.py` adds
them up for the 7B table; a test checks it against the real layers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from types import ModuleType

import torch
from torch import nn

from .config import QUANTIZE_MODES as MODES

BLOCKSIZE = 64
"""Weights per NF4 absmax block (bitsandbytes' default)."""
INT8_THRESHOLD = 6.0
"""LLM.int8()'s outlier threshold: activation columns above it run in 16-bit (the paper's and transformers' value)."""
NF4_CODEBOOK = 16
"""Values of the NF4 code table kept (in fp32) beside each 4-bit weight."""


class QuantizeError(ValueError):
    """A quantization request that cannot be met (unknown mode, bitsandbytes missing or unusable)."""


def load_bitsandbytes() -> ModuleType:
    """Import bitsandbytes, or say which extra installs it."""
    # why: on CPUs with AVX512-BF16 bitsandbytes logs, at import, that an optional kernel fetched from a model hub is
    # missing; it falls back to its own kernel, and nothing here may download at run time.
    cpu_ops = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = cpu_ops.level
    cpu_ops.setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError as err:
        raise QuantizeError(
            f"8-bit and 4-bit loading need bitsandbytes, which cannot be imported ({err}); "
            "install the quantize extra: pip install 'lasagna[quantize]'"
        ) from err
    finally:
        cpu_ops.setLevel(level)
    matmul = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _QuietInt8Cast) for f in matmul.filters):
        matmul.addFilter(_QuietInt8Cast())
    return bitsandbytes


class _QuietInt8Cast(logging.Filter):
    """Drops bitsandbytes' note, logged at every 8-bit matmul, that bf16 / fp32 inputs are cast to fp16: LLM.int8()
    always multiplies in fp16 (docs/devices.md says so once), and a note per layer per token buries real warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


def quantized_bytes(out_features: int, in_features: int, mode: str) -> int:
    """Bytes bitsandbytes keeps for one (out_features, in_features) weight quantized by `mode` (bias not included).

    8bit: int8 weights + one fp32 scale per output row. 4bit (NF4, no double quantization): packed 4-bit weights
    + one fp32 absmax per block of `BLOCKSIZE` weights + the 16-entry fp32 code table."""
    n = out_features * in_features
    if mode == "8bit":
        return n + 4 * out_features
    if mode == "4bit":
        return (n + 1) // 2 + 4 * math.ceil(n / BLOCKSIZE) + 4 * NF4_CODEBOOK
    raise QuantizeError(f"unknown quantize mode {mode!r}; known: {', '.join(MODES)}")


def stored_bytes(module: nn.Module) -> int:
    """Bytes of `module`'s parameters and buffers as they are stored, the quantization statistics included (read from
    the real tensors: what `quantized_bytes` predicts)."""
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        total += t.numel() * t.element_size()
        state = getattr(t, "quant_state", None)
        if state is not None:  # 4-bit: absmax and code table live in the quant state, not in a parameter
            total += sum(x.numel() * x.element_size() for x in (state.absmax, state.code))
        scales = getattr(t, "SCB", None)
        if scales is not None:  # 8-bit: the row scales
            total += scales.numel() * scales.element_size()
    return total


def logical_numel(p: torch.Tensor) -> int:
    """Weights a parameter stands for: a packed 4-bit parameter holds two per element."""
    state = getattr(p, "quant_state", None)
    return int(math.prod(state.shape)) if state is not None else p.numel()


def quantize_linears(
    root: nn.Module,
    mode: str,
    device: torch.device,
    compute_dtype: torch.dtype,
    keep: Iterable[nn.Module] = (),
    progress: bool = False,
) -> int:
    """Replace every `nn.Linear` under `root` (except those in `keep`) by its bitsandbytes form on `device`; returns
    how many were replaced. `compute_dtype` is what 4-bit layers dequantize to for their matmul."""
    if mode not in MODES:
        raise QuantizeError(f"unknown quantize mode {mode!r}; known: {', '.join(MODES)}")
    bnb = load_bitsandbytes()
    kept = {id(m) for m in keep}
    # names, not modules: each full-precision layer is freed as soon as its quantized form replaces it
    targets = [name for name, m in root.named_modules() if type(m) is nn.Linear and id(m) not in kept]
    from tqdm.auto import tqdm

    for name in tqdm(targets, desc=f"quantize {mode}", unit="layer", disable=not progress, leave=False):
        parent_name, _, attr = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, attr, _quantized(bnb, getattr(parent, attr), mode, device, compute_dtype))
    return len(targets)


def _quantized(bnb: ModuleType, linear: nn.Linear, mode: str, device: torch.device, compute_dtype: torch.dtype):
    """The bitsandbytes layer for `linear`, its weight quantized on `device` (bitsandbytes quantizes on `.to()` from a
    CPU tensor; a weight elsewhere comes to the CPU first)."""
    weight = linear.weight.detach().to("cpu")
    shape = {"input_features": linear.in_features, "output_features": linear.out_features}
    has_bias = linear.bias is not None
    if mode == "8bit":
        layer = bnb.nn.Linear8bitLt(
            **shape, bias=has_bias, has_fp16_weights=False, threshold=INT8_THRESHOLD, device="meta"
        )
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False).to(device)
    else:
        layer = bnb.nn.Linear4bit(
            **shape,
            bias=has_bias,
            compute_dtype=compute_dtype,
            compress_statistics=False,
            quant_type="nf4",
            device="meta",
        )
        layer.weight = bnb.nn.Params4bit(
            weight,
            requires_grad=False,
            blocksize=BLOCKSIZE,
            compress_statistics=False,
            quant_type="nf4",
            module=layer,
        ).to(device)
        # why: bitsandbytes' AVX512-BF16 CPU kernel repacks weights in blocks of 32 output rows and whole absmax
        # blocks per row, and fails on other shapes; its generic CPU kernel takes any (GPUs are not concerned)
        odd = linear.out_features % 32 or linear.in_features % BLOCKSIZE
        if odd and getattr(layer, "support_avx512bf16_for_cpu", False):
            layer.support_avx512bf16_for_cpu = False
    if has_bias:
        layer.bias = nn.Parameter(linear.bias.detach().to(device), requires_grad=False)
    return layer
