"""The run-level files of a `lasagna segment` output folder, rebuilt from the images' own result.json files.

- `predictions.json`: COCO's results format, a list of {"image_id", "category_id", "segmentation" (RLE, counts a
  str), "score"}: one entry per present class of each image (score: P(present)), or per mask of a query's answer
  (score 1.0: an answer's masks carry no score of their own in result.json).
- `categories.json`: [{"id", "name"}], ids 1..K in the order of the class list (a query run has one category, the
  query itself).
- `images.json`: COCO "images" entries [{"id", "file_name", "height", "width", "path"}] for every image with a
  result; ids number the run's whole sorted listing from 1, so an image keeps its id whichever images failed, and
  a resumed or sharded run numbers them as a clean one does. `path` is the image as it was read.
- `errors.jsonl`: one JSON line per image that failed, {"path", "error", "message"}, sorted by path.

Each is written atomically, so a reader never sees half a file; rebuilding from result.json means a run killed
at any moment, and every shard of a multi-process run, ends with the same files as one clean run.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from ..atomic import write_atomic_file
from .listing import Item


def categories(classes: list[str] | None, query: str | None) -> list[dict]:
    """COCO categories of a run: ids 1..K in class-list order, or the query as the one category."""
    names = classes if classes is not None else [query]
    return [{"id": k, "name": name} for k, name in enumerate(names, 1)]


def rebuild(
    out: Path, items: list[Item], classes: list[str] | None, query: str | None, progress: bool = False
) -> tuple[int, int]:
    """Write predictions.json, categories.json and images.json of `out` from the result.json of each of `items`
    (the run's sorted listing); returns (images with a result, predictions)."""
    ids = {c["name"]: c["id"] for c in categories(classes, query)}
    images, predictions = [], []
    quiet = not progress or len(items) < 1000  # why: reading a few result.json files takes no time worth a bar
    bar = tqdm(items, desc="run files", unit="img", disable=quiet, leave=False, dynamic_ncols=True)
    for image_id, item in enumerate(bar, 1):
        path = out / item.rel / "result.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        height, width = result["image_size"]
        images.append(
            {"id": image_id, "file_name": item.file_name, "height": height, "width": width, "path": str(item.path)}
        )
        if classes is not None:
            found = [(ids.get(c["name"]), c["mask"], c["score"]) for c in result["classes"] if c["present"]]
        else:
            found = [(1, mask, 1.0) for mask in result["masks"]]
        predictions += [
            {"image_id": image_id, "category_id": category, "segmentation": mask, "score": score}
            for category, mask, score in found
            if category is not None and mask is not None
        ]
    _write_json(out / "categories.json", categories(classes, query))
    _write_json(out / "images.json", images)
    _write_json(out / "predictions.json", predictions)
    return len(images), len(predictions)


def write_errors(out: Path, errors: list[dict]) -> None:
    """errors.jsonl, sorted by path (shards finish in any order); written even when empty, so that a clean run is
    told apart from one that never got there."""
    lines = "".join(json.dumps(e) + "\n" for e in sorted(errors, key=lambda e: e["path"]))
    write_atomic_file(out / "errors.jsonl", lambda tmp: tmp.write_text(lines))


def _write_json(path: Path, data) -> None:
    text = json.dumps(data, indent=None, separators=(",", ":")) + "\n"
    write_atomic_file(path, lambda tmp: tmp.write_text(text))
