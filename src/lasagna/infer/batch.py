"""Class lists over several images in one batch: what a server does with concurrent requests.

`Engine.segment_classes` runs one image: its chunks share that image's prefix. Here the images are encoded
together, their prefixes (system prompt + image tokens + instruction, the same length for every image) run through
the LLM as one batch, and the chunks of all the images decode together (`decode.ROW_BATCH` rows per LLM call), each
row continuing its own image's prefix from the batched KV cache (`decode.Prefix` with an `owner` per row). Each
image's answers then go through `Engine.segment_classes` itself, fed with the batch's outputs (`_Replay`), so its
assembly and decision step (`_decide`, with the model's add-on verifiers) are the engine's own and each `Prediction`
is the one the image gets alone, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import DynamicCache

from ..model.lasagna import ImageEncoding
from ..model.mllm import expand_images
from ..preprocess import PreparedImage, check_image
from .decode import Prefix, RowResult, decode_free, decode_template
from .engine import Decoder, Engine, ImageInput, Prediction, _common_prefix, split_chunks
from .inputs import check_classes

MAX_ROWS = 64
"""Chunk rows of one group of images: images whose rows would pass it go into the next group, so that the images
encoded at once stay few (the rows themselves run `decode.ROW_BATCH` at a time)."""


@torch.no_grad()
def segment_batch(
    engine: Engine,
    images: Sequence[ImageInput],
    class_lists: Sequence[list[str]],
    chunk_size: int | Sequence[int] = 16,
    decoder: Decoder | None = None,
    max_rows: int = MAX_ROWS,
) -> list[Prediction]:
    """One `Prediction` per (image, class list) pair, as `engine.segment_classes(image, classes, chunk_size,
    decoder)` gives it; `chunk_size` is one for all or one per image. Images are (H, W, 3) uint8 RGB of any sizes,
    or their `PreparedImage`s."""
    if len(images) != len(class_lists):
        raise ValueError(f"got {len(images)} images but {len(class_lists)} class lists; give one list per image")
    images = [x if isinstance(x, PreparedImage) else check_image(x, f"image {i}") for i, x in enumerate(images)]
    lists = [check_classes(c, engine.reserved) for c in class_lists]
    sizes = [chunk_size] * len(lists) if isinstance(chunk_size, int) else list(chunk_size)
    if len(sizes) != len(lists):
        raise ValueError(f"got {len(sizes)} chunk sizes for {len(lists)} images")
    for size in sizes:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {size!r}")
    decoder = decoder or engine.model.cfg.default_decoder
    if decoder not in ("free", "template"):
        raise ValueError(f"decoder must be 'free' or 'template', got {decoder!r}")
    chunks = [split_chunks(c, s) for c, s in zip(lists, sizes, strict=True)]
    out: list[Prediction] = []
    for group in _groups([len(c) for c in chunks], max_rows):
        # why per group: an image's pixels take megabytes, so only the group's are computed at a time
        prepared = [engine.prepare(images[i], f"image {i}") for i in group]
        replays = _segment_group(engine, prepared, [chunks[i] for i in group], decoder)
        for i, replay in zip(group, replays, strict=True):
            out.append(replay.segment_classes(images[i], lists[i], sizes[i], decoder))
    return out


def _groups(row_counts: list[int], max_rows: int) -> list[list[int]]:
    """Consecutive images whose chunk rows add up to at most `max_rows` (an image with more rows goes alone)."""
    groups: list[list[int]] = []
    total = 0
    for i, rows in enumerate(row_counts):
        if not groups or total + rows > max_rows:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += rows
    return groups


class _Replay(Engine):
    """`engine` for one image whose encoding and chunk decoding were done in a batch: `Engine.segment_classes` on it
    returns them instead of computing them, and does everything else (parsing, `_decide`, masks) as it always does."""

    def __init__(self, engine: Engine, encoded: tuple, rows: list[RowResult], chunks: list[list[str]]):
        vars(self).update(vars(engine))
        self._encoded, self._rows, self._chunks = encoded, rows, chunks

    def encode_image(self, image):
        return self._encoded

    def _run_chunks(self, enc, chunks, decoder):
        if chunks != self._chunks:
            raise RuntimeError("the engine chunked the class list differently from the batch")
        return self._rows


def _segment_group(
    engine: Engine, images: list[PreparedImage], chunks: list[list[list[str]]], decoder
) -> list[_Replay]:
    """Encode `images` together and decode all their chunks as one batch -> one `_Replay` per image."""
    model = engine.model
    param = next(model.parameters())
    to = {"device": param.device, "dtype": param.dtype}
    clips, sams = torch.stack([p.clip for p in images]), torch.stack([p.sam for p in images])
    enc = model.encode_images(clips.to(**to), sams.to(**to))

    rows, starts, owner, budgets, runs = [], [], [], [], []
    for k, image_chunks in enumerate(chunks):
        planned = engine.chunk_rows(image_chunks, decoder)
        rows += planned.rows
        starts += planned.starts
        budgets += planned.budgets
        runs += planned.runs
        owner += [k] * len(planned.rows)
    shared = _common_prefix(rows)
    if starts:  # decisions are never part of the shared prefix
        shared = min(shared, *starts)
    prefix = _prefix_per_row(engine, enc, rows[0][:shared], owner)
    suffixes = [r[shared:] for r in rows]
    if decoder == "free":  # each row keeps the limits it has alone (`Engine.chunk_rows`): the same answer
        results = decode_free(model, prefix, suffixes, engine.ids, max_new_tokens=budgets, max_run=runs)
    else:
        results = decode_template(model, prefix, suffixes, [s - shared for s in starts], engine.ids)

    replays = []
    for k, image in enumerate(images):
        mine = [r for r, o in zip(results, owner, strict=True) if o == k]
        one = ImageEncoding(
            llm_feats=enc.llm_feats[k : k + 1],
            sam_embeds=enc.sam_embeds[k : k + 1],
            sam_skips=tuple(s[k : k + 1] for s in enc.sam_skips),
        )
        replays.append(_Replay(engine, (one, image.resized, image.size), mine, chunks[k]))
    return replays


def _prefix_per_row(engine: Engine, enc: ImageEncoding, prefix_ids: list[int], owner: list[int]) -> Prefix:
    """Run the shared prefix text over every image at once; each row continues its own image's (`owner`)."""
    model = engine.model
    count = enc.llm_feats.shape[0]
    ids = torch.tensor([prefix_ids] * count, device=enc.llm_feats.device)
    expanded = expand_images(model.embed_tokens, ids, torch.ones_like(ids), enc.llm_feats, model.pad_id)
    cache = DynamicCache(config=model.llm.config)
    model.llm.get_decoder()(inputs_embeds=expanded.embeds, past_key_values=cache, use_cache=True)
    return Prefix(cache=cache, length=expanded.embeds.shape[1], owner=owner)
