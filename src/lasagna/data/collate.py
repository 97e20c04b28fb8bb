"""Samples -> one LasagnaInputs batch: tokenize with label masking, pad, preprocess each image once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import ModelConfig
from ..model.lasagna import LasagnaInputs
from ..preprocess import check_image, clip_pixels, sam_pixels
from ..tokenization import encode_dialogue
from ..tokens import IGNORE_INDEX, token_ids
from .tasks import Sample


@dataclass
class Collator:
    """Callable for DataLoader(collate_fn=...). Conversations about one image stay contiguous, in sample order."""

    tokenizer: object
    cfg: ModelConfig
    max_length: int | None = None  # text tokens before image expansion; default: what the LLM allows

    def __post_init__(self):
        self.pad_id = token_ids(self.tokenizer).pad
        if self.max_length is None:
            self.max_length = self.cfg.llm.max_position_embeddings - self.cfg.vision.num_features + 1

    def __call__(self, samples: list[Sample]) -> LasagnaInputs:
        rows, labels, image_index = [], [], []
        clips, sams, resized, originals, gt_masks, ignores = [], [], [], [], [], []
        for i, sample in enumerate(samples):
            image = check_image(sample.image, f"sample {sample.meta.image_id}")
            clips.append(clip_pixels(image, self.cfg.preprocess))
            sam, size = sam_pixels(image, self.cfg.preprocess)
            sams.append(sam)
            resized.append(size)
            originals.append(tuple(image.shape[:2]))
            masks = []
            for conv in sample.conversations:
                ids, lab = encode_dialogue(
                    self.tokenizer, list(conv.rounds), self.cfg.tokenization, self.cfg.use_im_start_end
                )
                if len(ids) > self.max_length:
                    raise ValueError(
                        f"sample {sample.meta.image_id}: {len(ids)} tokens exceed the limit of {self.max_length}; "
                        "shorten the class list (truncating would drop <ins> tokens and misalign masks)"
                    )
                rows.append(ids)
                labels.append(lab)
                image_index.append(i)
                masks.append(conv.masks)
            stacked = np.concatenate(masks) if masks else np.zeros((0, *image.shape[:2]), bool)
            gt_masks.append(torch.from_numpy(stacked.astype(np.float32)))
            ignores.append(None if sample.ignore is None else torch.from_numpy(sample.ignore.astype(bool)))
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        label_t = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        for r, (ids, lab) in enumerate(zip(rows, labels, strict=True)):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            label_t[r, : len(lab)] = torch.tensor(lab)
            attention[r, : len(ids)] = 1
        return LasagnaInputs(
            input_ids=input_ids,
            attention_mask=attention,
            image_index=torch.tensor(image_index),
            clip_pixels=torch.stack(clips),
            sam_pixels=torch.stack(sams),
            resize_sizes=resized,
            original_sizes=originals,
            labels=label_t,
            gt_masks=gt_masks,
            ignore=ignores,
        )
