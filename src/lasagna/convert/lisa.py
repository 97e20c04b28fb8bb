"""Released LISA checkpoints (LISA-7B-v1, LISA-13B-llama2-v1, ...) -> our checkpoint format.

LISA is LaSagnA's parent: the same LLaVA + SAM model with the same weight names (LASAGNA_SPEC 1.8: the model code
differs by renames only), so the LaSagnA key map (`keymap.official_rules`) reads it. What differs is the vocabulary:

- LISA's mask token is `[SEG]`, the role LaSagnA's `<ins>` plays (the hidden state before it prompts SAM). It keeps
  its id and its trained rows, and is renamed `<ins>` in the tokenizer, so the engine reads LISA's answer
  "Sure, [SEG]." as one target.
- LISA has no `<no_ins>` (it cannot say a class is absent) and no `<cat_start>` / `<cat_end>` / `<semantic>` (it
  never saw a class list); `<im_start>` / `<im_end>` too, where a release lacks them. They are added after the last
  row as untrained rows: input embeddings at the mean of the trained ones, output rows at zero (logit 0, which a
  trained model's chosen token always beats), so the model never writes them. The report names each one.
- LISA's prompt is the llava_v1 conversation LaSagnA uses, and the engine's canonical referring question ("What is
  {phrase} in this image? Please output segmentation mask.") is one of LISA's own training questions, so
  `lasagna segment --query` asks a converted LISA in its training distribution. A question that ends in "?" or "."
  is asked as it is.

What a converted LISA can do here: referring and reasoning queries, one target per query (`segment --query`,
`eval` on referring and reasoning data). What it cannot: class lists. `segment --classes` would put a LaSagnA
complex query to a model that never saw one; ask one class per query instead (`lasagna eval --single-class` does).
The folder also holds `lisa.json`, which says so and lists the renamed and added tokens.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_atomic_dir
from ..checkpoint import DEFAULT_SHARD_BYTES, write_config
from ..tokens import IMAGE_WRAP_TOKENS, INPUT_TOKENS, INS, NO_INS, token_ids
from .infer import SAM_DECODER_HEADS
from .official import TOKENIZER_FILES, ConvertReport, plan_release, stream_weights
from .sources import ShardWriter

SEG = "[SEG]"
NOTE = "lisa.json"
VOCAB_ROWS = ("llm.model.embed_tokens.weight", "llm.lm_head.weight")
UNTRAINED = {
    NO_INS: "LISA cannot answer 'absent': a class list on this model is asked one class per query",
    **dict.fromkeys(INPUT_TOKENS, "LISA never saw a class list: only LaSagnA's complex query uses it"),
    **dict.fromkeys(IMAGE_WRAP_TOKENS, "the release's tokenizer lacks it although its config wraps images"),
}


@dataclass
class LisaReport(ConvertReport):
    seg_id: int = -1  # the id `[SEG]` had, which `<ins>` now has
    added: dict[str, str] = field(default_factory=dict)  # token added as an untrained row -> why it is untrained


def _rename(value: Any, old: str, new: str) -> Any:
    """`value` (parsed JSON) with every string and key equal to `old` replaced by `new`."""
    if isinstance(value, dict):
        return {(new if k == old else k): _rename(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v, old, new) for v in value]
    return new if value == old else value


def lisa_tokenizer(src: Path, dst: Path, rows: int):
    """Copy LISA's tokenizer files to `dst` with `[SEG]` renamed `<ins>`, add the LaSagnA tokens it lacks after
    its last id and save it there. Returns (tokenizer, id of `<ins>`, the tokens added in order)."""
    from transformers import AutoTokenizer

    present = [name for name in TOKENIZER_FILES if (src / name).is_file()]
    if "tokenizer.model" not in present and "tokenizer.json" not in present:
        raise FileNotFoundError(f"{src} has no tokenizer: expected tokenizer.model or tokenizer.json")
    original = AutoTokenizer.from_pretrained(str(src))
    vocab = original.get_vocab()
    if SEG not in vocab:
        raise ValueError(
            f"the tokenizer in {src} has no {SEG} token: not a LISA release "
            "(a LaSagnA release converts with `lasagna convert official`)"
        )
    if INS in vocab:
        raise ValueError(f"the tokenizer in {src} has both {SEG} and {INS}; cannot tell which one is the mask token")
    if len(original) != rows:
        raise ValueError(f"tokenizer in {src} has {len(original)} entries but the embedding matrix has {rows} rows")
    for name in present:
        if name.endswith(".json"):
            data = json.loads((src / name).read_text(encoding="utf-8"))
            (dst / name).write_text(json.dumps(_rename(data, SEG, INS), ensure_ascii=False, indent=1))
        else:
            shutil.copy2(src / name, dst / name)
    tokenizer = AutoTokenizer.from_pretrained(str(dst))  # dst has no config.json yet: only tokenizer files count
    if tokenizer.get_vocab().get(INS) != vocab[SEG]:
        raise ValueError(f"renaming {SEG} to {INS} in {src}'s tokenizer files moved it; nothing was written")
    added = []
    for token in (*INPUT_TOKENS, NO_INS, *IMAGE_WRAP_TOKENS):  # the released LaSagnA order
        if token not in tokenizer.get_vocab():
            tokenizer.add_tokens([token], special_tokens=token != NO_INS)
            added.append(token)
    tokenizer.save_pretrained(str(dst))
    token_ids(tokenizer)  # every LaSagnA token now has an id
    return tokenizer, vocab[SEG], added


def grow_rows(name: str, tensor: torch.Tensor, extra: int) -> torch.Tensor:
    """The vocabulary matrices with `extra` rows appended: input embeddings at the mean trained row (a neutral
    input), output rows at zero (never chosen); every other tensor unchanged."""
    if name not in VOCAB_ROWS or not extra:
        return tensor
    row = tensor.float().mean(0, keepdim=True) if name == VOCAB_ROWS[0] else torch.zeros(1, tensor.shape[1])
    return torch.cat([tensor, row.to(tensor.dtype).expand(extra, -1)])


def convert_lisa(
    src: str | Path,
    out: str | Path,
    clip: str | Path | None,
    dtype: str = "bf16",
    overwrite: bool = False,
    sam_decoder_heads: int = SAM_DECODER_HEADS,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> LisaReport:
    """Convert a released LISA folder `src` (+ a CLIP folder) into our checkpoint folder `out`, written atomically.

    Every weight is planned (mapped, allowed leftover, or an error naming it) and checked against a meta-device
    build before anything is written; see the module docstring for the tokens.
    """
    p = plan_release(src, out, clip, dtype, overwrite, sam_decoder_heads)  # at LISA's vocabulary
    result: dict[str, Any] = {}

    def fill(tmp: Path) -> None:
        _, seg_id, added = lisa_tokenizer(p.src, tmp, p.rows)
        p.config.llm.vocab_size = p.rows + len(added)  # the rows this converter adds are not in the release
        writer = ShardWriter(tmp, max_shard_bytes)
        grow = partial(grow_rows, extra=len(added))
        main = stream_weights(p.files, p.plan, writer, p.dtype, "released weights", grow)
        result["clip"] = stream_weights(p.clip_files, p.clip_plan, writer, p.dtype, "CLIP weights")
        writer.close()
        write_config(tmp, p.config)
        result.update(main=main, seg_id=seg_id, added={token: UNTRAINED[token] for token in added})
        note = {
            "converted_from": "LISA",
            "source": str(src),
            "renamed": {SEG: INS, "id": seg_id},
            "added_untrained": result["added"],
            "can": "referring and reasoning queries, one target per query (lasagna segment --query)",
            "cannot": "class lists: ask one class per query (lasagna eval --single-class)",
        }
        (tmp / NOTE).write_text(json.dumps(note, indent=1) + "\n")

    write_atomic_dir(p.out, fill, overwrite=overwrite)
    return LisaReport(
        out=p.out,
        config=p.config,
        tensors=result["main"] + result["clip"],
        clip_tensors=result["clip"],
        skipped=p.skipped,
        seg_id=result["seg_id"],
        added=result["added"],
    )
