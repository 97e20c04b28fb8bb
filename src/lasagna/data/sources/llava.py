"""LLaVA-Instruct-150k visual chat, as VQA records.

Expected tree under the data root:

    llava_dataset/llava_instruct_150k.json   [{"id", "image": "<file>.jpg",
                                               "conversations": [{"from": "human", "value": ...},
                                                                 {"from": "gpt", "value": ...}, ...]}]
    coco/train2017/<file>.jpg

Turns are (human, assistant) pairs; the `<image>` placeholder and the line break beside it are removed from the
text (the task layer places the image itself). Entries must alternate human / gpt, starting with human.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

from lasagna.data.records import VQARecord
from lasagna.data.sources.base import Layout, RecordSource
from lasagna.preprocess import to_rgb
from lasagna.tokens import IMAGE

LLAVA = Layout(
    "llava-instruct",
    "  llava_dataset/llava_instruct_150k.json\n  coco/train2017/<image file named by each entry>",
)
_PLACEHOLDER = re.compile(r"\n?" + re.escape(IMAGE) + r"\n?")
_ROLES = ("human", "gpt")


def _turns(conversations: list, where: str) -> tuple[tuple[str, str], ...]:
    if not conversations or len(conversations) % 2:
        raise ValueError(f"{where}: expected an even, non-zero number of messages, got {len(conversations)}")
    roles = [message.get("from") for message in conversations]
    expected = [_ROLES[i % 2] for i in range(len(conversations))]
    if roles != expected:
        raise ValueError(f"{where}: messages must alternate human/gpt starting with human, got {roles}")
    texts = [_PLACEHOLDER.sub("", message["value"]).strip() for message in conversations]
    return tuple(zip(texts[0::2], texts[1::2], strict=True))


def llava_instruct(root: str | Path | None = None, split: str = "train") -> RecordSource:
    """LLaVA-Instruct-150k (one split, "train")."""
    LLAVA.split(split, ("train",))
    base = LLAVA.root(root)
    path = LLAVA.require(base / "llava_dataset" / "llava_instruct_150k.json")
    image_dir = LLAVA.require(base / "coco" / "train2017")
    entries = json.loads(path.read_text(encoding="utf-8"))
    records = []
    for index, entry in enumerate(entries):
        where = f"{path} entry #{index}"
        if not isinstance(entry, dict) or "image" not in entry:
            raise ValueError(f"{where}: expected an object with an 'image' file name")
        records.append(
            VQARecord(
                image_id=str(entry.get("id", Path(entry["image"]).stem)),
                load_image=partial(to_rgb, image_dir / entry["image"]),
                turns=_turns(entry.get("conversations", []), where),
            )
        )
    LLAVA.require_all((image_dir / entry["image"] for entry in entries), f"images named in {path}")
    return RecordSource(name="llava-instruct", task="vqa", records=tuple(records))
