"""Released LaSagnA-7B HF folders -> our checkpoint format, and a key check against the official key list (LISA
releases share the key names; `lisa.py` converts them, renaming their `[SEG]` token).

A released folder holds config.json (model_type "llava"), sharded `pytorch_model-*.bin` + index (or a single file,
or safetensors), and the tokenizer with the LaSagnA tokens added. It has no CLIP weights: the authors' merge script
drops every "vision_tower" key, so the user supplies a local openai/clip-vit-large-patch14 folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..atomic import write_atomic_dir
from ..checkpoint import DEFAULT_SHARD_BYTES, write_config
from ..config import ModelConfig
from ..devices import DTYPES
from ..model.lasagna import LasagnaModel
from ..tokens import token_ids
from .infer import SAM_DECODER_HEADS, model_config_from_release, read_json
from .keymap import CLIP_PREFIX, CLIP_RULES, KeyPlan, official_rules, plan_keys
from .sources import ShardWriter, WeightFile, read_shapes, weight_files

TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
NO_CLIP = (
    "the released LaSagnA/LISA checkpoint does not contain the CLIP vision tower (the authors' export drops every "
    "'vision_tower' weight); pass --clip DIR, a local copy of openai/clip-vit-large-patch14 "
    "(a folder with config.json and model.safetensors or pytorch_model.bin)"
)


@dataclass
class ConvertReport:
    out: Path
    config: ModelConfig
    tensors: int  # written, CLIP included
    clip_tensors: int
    skipped: dict[str, str]  # allowed leftovers and skipped CLIP keys -> reason


def our_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our state-dict names and shapes for `cfg`, from a meta-device build (no memory, no init)."""
    with torch.device("meta"):
        model = LasagnaModel(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def plan_official(official: Mapping[str, Sequence[int]], ours: Mapping[str, Sequence[int]]) -> KeyPlan:
    """Map official names onto ours; every non-CLIP key of ours must be filled."""
    scope = [k for k in ours if not k.startswith(CLIP_PREFIX)]
    return plan_keys(official, official_rules(), ours, scope)


def check_official_keys(official: Mapping[str, Sequence[int]], cfg: ModelConfig) -> KeyPlan:
    return plan_official(official, our_shapes(cfg))


def key_report_line(official: Mapping[str, Sequence[int]], plan: KeyPlan) -> str:
    mapped = len(plan.mapping) + len(plan.skipped)
    return (
        f"official keys: {len(official)} mapped: {mapped} missing: {len(plan.missing)} "
        f"unexpected: {len(plan.unexpected)} shape-mismatch: {len(plan.shape_mismatch)}"
    )


def copy_tokenizer(src: Path, dst: Path, rows: int):
    """Copy the tokenizer files, load them back as load_pretrained will, and check the LaSagnA tokens and size."""
    from transformers import AutoTokenizer

    present = [name for name in TOKENIZER_FILES if (src / name).is_file()]
    if "tokenizer.model" not in present and "tokenizer.json" not in present:
        raise FileNotFoundError(f"{src} has no tokenizer: expected tokenizer.model or tokenizer.json")
    for name in present:
        shutil.copy2(src / name, dst / name)
    tokenizer = AutoTokenizer.from_pretrained(str(dst))  # dst has no config.json yet: only tokenizer files count
    try:
        token_ids(tokenizer)
    except ValueError as e:
        hint = (
            "; it has [SEG]: a LISA release, convert it with `lasagna convert lisa`"
            if "[SEG]" in tokenizer.get_vocab()
            else ""
        )
        raise ValueError(f"tokenizer in {src}: {e}{hint}") from None
    if len(tokenizer) != rows:
        raise ValueError(f"tokenizer in {src} has {len(tokenizer)} entries but the embedding matrix has {rows} rows")
    return tokenizer


def _copy_as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A contiguous copy with its own storage (safetensors refuses views), floats cast to `dtype`."""
    return t.to(dtype=dtype if t.is_floating_point() else t.dtype, copy=True).contiguous()


def stream_weights(
    files: list[Path],
    plan: KeyPlan,
    writer: ShardWriter,
    dtype: torch.dtype,
    desc: str,
    change: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Copy one file at a time into the writer; `change(our name, tensor)` may rework a tensor on the way (the LISA
    converter grows the vocabulary rows). Returns how many tensors were written."""
    count = 0
    for path in tqdm(files, desc=desc, unit="file"):
        wf = WeightFile(path)
        for name, tensor in wf.tensors():
            if name in plan.mapping:
                target = plan.mapping[name]
                tensor = tensor if change is None else change(target, tensor)
                writer.add(target, _copy_as(tensor, dtype))
                count += 1
        wf.close()
    return count


def convert_official(
    src: str | Path,
    out: str | Path,
    clip: str | Path | None,
    dtype: str = "bf16",
    overwrite: bool = False,
    sam_decoder_heads: int = SAM_DECODER_HEADS,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> ConvertReport:
    """Convert a released folder `src` (+ a CLIP folder) into our checkpoint folder `out`, written atomically.

    Every key is planned (mapped, allowed leftover, or an error naming it) and every shape checked against a
    meta-device build of the inferred config before anything is written.
    """
    p = plan_release(src, out, clip, dtype, overwrite, sam_decoder_heads)
    counts: dict[str, int] = {}

    def fill(tmp: Path) -> None:
        copy_tokenizer(p.src, tmp, p.config.llm.vocab_size)
        writer = ShardWriter(tmp, max_shard_bytes)
        counts["main"] = stream_weights(p.files, p.plan, writer, p.dtype, "released weights")
        counts["clip"] = stream_weights(p.clip_files, p.clip_plan, writer, p.dtype, "CLIP weights")
        writer.close()
        write_config(tmp, p.config)

    write_atomic_dir(p.out, fill, overwrite=overwrite)
    return ConvertReport(
        out=p.out,
        config=p.config,
        tensors=counts["main"] + counts["clip"],
        clip_tensors=counts["clip"],
        skipped=p.skipped,
    )


@dataclass
class ReleasePlan:
    """What a converter of a released folder knows before it writes: where every weight goes, checked."""

    src: Path
    out: Path
    files: list[Path]
    clip_files: list[Path]
    rows: int  # the released vocabulary (rows of embed_tokens)
    config: ModelConfig
    plan: KeyPlan
    clip_plan: KeyPlan
    dtype: torch.dtype

    @property
    def skipped(self) -> dict[str, str]:
        return {**self.plan.skipped, **self.clip_plan.skipped}


def plan_release(
    src: str | Path,
    out: str | Path,
    clip: str | Path | None,
    dtype: str,
    overwrite: bool,
    sam_decoder_heads: int,
) -> ReleasePlan:
    """Check the arguments and plan every key of a released LaSagnA/LISA folder and its CLIP folder against a
    meta-device build of the inferred config (at the release's vocabulary), raising an error that names what is
    wrong before anything is written."""
    src, out = Path(src), Path(out)
    if clip is None:
        raise ValueError(NO_CLIP)
    clip = Path(clip)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    hf = read_json(src / "config.json", "released config")
    files, clip_files = weight_files(src), weight_files(clip)
    shapes, clip_shapes = read_shapes(files), read_shapes(clip_files)
    rows = shapes.get("model.embed_tokens.weight", (None,))[0]
    if rows != hf.get("vocab_size"):
        raise ValueError(f"{src}: config vocab_size {hf.get('vocab_size')} but embed_tokens has {rows} rows")
    cfg = model_config_from_release(hf, shapes, clip, str(src), sam_decoder_heads)
    ours = our_shapes(cfg)
    plan = plan_official(shapes, ours)
    plan.raise_if_bad(f"released weights in {src}")
    clip_plan = plan_keys(clip_shapes, CLIP_RULES, ours, [k for k in ours if k.startswith(CLIP_PREFIX)])
    clip_plan.raise_if_bad(f"CLIP weights in {clip}")
    return ReleasePlan(src, out, files, clip_files, rows, cfg, plan, clip_plan, getattr(torch, DTYPES[dtype]))
