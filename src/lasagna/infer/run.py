"""`lasagna segment` over many images: one output folder per image, resumable, batched, sharded over processes.

OUT holds `run.json` (what the answers depend on: model, class list or query, chunk size, decoder), one folder per
image (`infer.outputs`: result.json, overlay.png, label.png, swapped in whole) and the run-level files that
`infer.exports` rebuilds from those folders at the end of every run. So:
- a rerun skips every image whose folder is complete and does the rest (`overwrite` redoes them all); a rerun with
  other answer settings is refused unless `overwrite`, since its folders would mix two class lists;
- a run killed at any moment loses at most the images in flight: each folder appears whole or not at all, and the
  next run rebuilds the run-level files from what is there;
- several processes (`Shard`) each take their share of the images left to do; the first writes run.json before
  and the run-level files after all are done, so the files equal those of one process.
Images are decoded and their encoder pixels computed (`preprocess.prepare`) in the background by a torch DataLoader
(`workers`), and class lists run `batch_size` images at a time through `infer.batch.segment_batch`; queries go image
by image. A bad image (unreadable, or one the model fails on) is reported in errors.jsonl and skipped, unless
`strict`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from ..atomic import write_atomic_file
from ..config import PreprocessConfig
from ..preprocess import PreparedImage, prepare, to_rgb
from .exports import rebuild, write_errors
from .inputs import ClassListError, ContextLengthError, TextTooLongError
from .listing import Item
from .outputs import write_image_outputs

if TYPE_CHECKING:  # the engine (torch, transformers) loads with the model, after the run's checks
    from .engine import Engine, Prediction

QUESTION_ERRORS = (ClassListError, TextTooLongError, ContextLengthError)
"""Errors of the class list or query rather than of an image: every image would fail alike, so the run stops."""

IMAGE_ERRORS = (ValueError, RuntimeError, OSError)
"""What one image may raise (unreadable, too large, out of memory on the device...): reported, then skipped."""


class RunSettingsError(ValueError):
    """OUT holds a run made with other answer settings (or is not a run folder at all)."""


class ImageFailedError(ValueError):
    """An image failed under `--strict`."""


@dataclass
class RunSpec:
    """What a run asks: a class list or a query, of a model, with the answer settings of a class list."""

    model: str
    classes: list[str] | None = None
    query: str | None = None
    chunk_size: int = 16
    decoder: str | None = None
    overlay: bool = True

    def answer_settings(self) -> dict:
        """The settings an image's answer depends on; a rerun into the same OUT must keep them."""
        if self.query is not None:
            return {"model": self.model, "query": self.query}
        return {"model": self.model, "classes": self.classes, "chunk_size": self.chunk_size, "decoder": self.decoder}


@dataclass
class Shard:
    """This process's part in a run over several processes: its `rank` of `world`, a `barrier` all must reach, and
    `gather`, which joins every process's list (in rank order). The defaults are one process alone."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None
    gather: Callable[[list], list] = lambda items: items


@dataclass
class Outcome:
    """What a run did: images segmented now, skipped as already done, failed (errors.jsonl lines, every process's);
    `last` is the one image segmented by this process when it did exactly one (for a short summary)."""

    done: int = 0
    skipped: int = 0
    failed: list[dict] = field(default_factory=list)
    last: tuple[Item, Prediction] | None = None
    images: int = 0
    predictions: int = 0


def check_out(out: Path, spec: RunSpec, overwrite: bool) -> None:
    """Refuse an OUT that is a file, a non-empty folder of the user's (no run.json), or a run with other answer
    settings (unless `overwrite`). Reads only, so every process may call it."""
    if not out.exists():
        return
    if not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder")
    run_json = out / "run.json"
    if not run_json.is_file():
        foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if foreign:
            raise FileExistsError(
                f"--out {out} holds files lasagna did not write ({', '.join(foreign[:3])}); name a new or empty folder"
            )
        return
    try:
        earlier = json.loads(run_json.read_text())["settings"]
    except (ValueError, KeyError, TypeError) as err:
        raise RunSettingsError(f"{run_json} cannot be read ({err}); remove it or name another --out") from err
    now = spec.answer_settings()
    if earlier != now and not overwrite:
        kinds = ["query" if "query" in settings else "class-list" for settings in (earlier, now)]
        changed = sorted(k for k in {*earlier, *now} if earlier.get(k) != now.get(k))
        verb = "differs" if len(changed) == 1 and changed != ["classes"] else "differ"
        what = (
            f"a {kinds[0]} run, and this is a {kinds[1]} run"
            if kinds[0] != kinds[1]
            else f"a run with other settings ({', '.join(changed)} {verb})"
        )
        raise RunSettingsError(
            f"--out {out} holds {what}; pass --overwrite to redo every image with the new ones, or name another --out"
        )


def is_complete(folder: Path, spec: RunSpec) -> bool:
    """Whether an image's folder holds everything this run would write there, made with this run's settings.

    why each folder's own settings are read back (result.json keeps them): `--overwrite` redoes only the images of
    its own PATHs, so a folder of another image may still hold an answer of an earlier class list, query, model or
    decoder; counted as done, its label.png indices would not match categories.json, or its answers would mix two
    models in predictions.json."""
    needed = ["result.json"]
    if spec.classes is not None:
        needed.append("label.png")
    if spec.overlay:
        needed.append("overlay.png")
    if not all((folder / name).is_file() for name in needed):
        return False
    try:
        return json.loads((folder / "result.json").read_text()).get("settings") == spec.answer_settings()
    except (ValueError, AttributeError):
        return False  # unreadable: redo it


def failure_text(line: dict) -> str:
    """An errors.jsonl line as one sentence that names its image once (most messages name the path already)."""
    path, message = str(line["path"]), str(line["message"])
    return message if path in message else f"{path}: {message}"


def write_run_json(out: Path, spec: RunSpec) -> None:
    data = {"settings": spec.answer_settings(), "overlay": spec.overlay}
    text = json.dumps(data, indent=1) + "\n"
    write_atomic_file(out / "run.json", lambda tmp: tmp.write_text(text))


def run_folder(
    engine: Engine,
    items: list[Item],
    out: Path,
    spec: RunSpec,
    *,
    overwrite: bool = False,
    batch_size: int = 1,
    workers: int = 0,
    strict: bool = False,
    shard: Shard | None = None,
    warnings: Sequence[str] = (),
    progress: bool = True,
) -> Outcome:
    """Segment `items` (the run's whole sorted listing) into `out`, this process doing its `shard` of the images not
    yet done; `warnings` go into every result.json (the class-list warnings `Lasagna.segment` adds). The first
    process writes run.json first and the run-level files last."""
    shard = shard or Shard()
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    check_out(out, spec, overwrite)
    pending = [item for item in items if overwrite or not is_complete(out / item.rel, spec)]
    shard.barrier()  # every process has seen what was done before the first writes anything
    if shard.rank == 0:
        write_run_json(out, spec)
    mine = pending[shard.rank :: shard.world]
    outcome = segment_images(engine, mine, out, spec, batch_size, workers, strict, warnings, progress)
    outcome.skipped = len(items) - len(pending)
    outcome.failed = shard.gather(outcome.failed)
    outcome.done = sum(shard.gather([outcome.done]))
    if shard.rank == 0:
        write_errors(out, outcome.failed)
        outcome.images, outcome.predictions = rebuild(out, items, spec.classes, spec.query, progress)
    shard.barrier()  # nobody leaves (and closes its connection) while the first is still writing
    return outcome


class _Images:
    """Decodes images and computes their encoder pixels under the model's preprocessing `cfg` in DataLoader workers:
    (item, `PreparedImage` or None, error line or None). A map-style dataset is all a DataLoader needs, so torch is
    not imported here before the model loads (`preprocess` imports it where the pixels are computed)."""

    def __init__(self, items: list[Item], cfg: PreprocessConfig):
        self.items = items
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        try:
            return item, prepare(to_rgb(item.path), self.cfg, str(item.path)), None
        except Exception as err:  # why: Pillow's decoders raise many types on broken files (SyntaxError, struct.error)
            return item, None, error_line(item, err)


def _die_with_parent(run_pid: int, _worker_id: int) -> None:
    """Ask Linux to kill this DataLoader worker when the run dies (a no-op elsewhere).

    why: a run killed with SIGKILL cannot stop its workers, and one blocked writing a decoded image into the pipe
    the run no longer reads would wait forever."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != run_pid:  # the run died before the request took effect
        os._exit(0)


def error_line(item: Item, err: BaseException) -> dict:
    """An errors.jsonl line: the image, the error's type and its message."""
    return {"path": str(item.path), "error": type(err).__name__, "message": str(err)}


def _as_list(batch: list) -> list:
    return batch


def segment_images(
    engine: Engine,
    items: list[Item],
    out: Path,
    spec: RunSpec,
    batch_size: int = 1,
    workers: int = 0,
    strict: bool = False,
    warnings: Sequence[str] = (),
    progress: bool = True,
) -> Outcome:
    """Segment `items` into their folders under `out` (no run-level files); failed images go to `Outcome.failed`
    (or raise `ImageFailedError` when `strict`)."""
    outcome = Outcome()
    if not items:
        return outcome
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _Images(items, engine.model.cfg.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_as_list,
        prefetch_factor=2 if workers else None,
        worker_init_fn=partial(_die_with_parent, os.getpid()) if workers else None,
    )
    bar = tqdm(total=len(items), unit="img", desc="segment", disable=not progress, dynamic_ncols=True)

    def fail(line: dict, err: BaseException | None = None) -> None:
        if strict:
            raise ImageFailedError(f"{failure_text(line)} (--strict stops at the first failure)") from err
        outcome.failed.append(line)
        bar.set_postfix(failed=len(outcome.failed))

    with bar:
        for batch in loader:
            decoded = []
            for item, prepared, error in batch:
                if error is None:
                    decoded.append((item, prepared))
                else:
                    fail(error)
            for (item, prepared), answer in zip(decoded, _answer(engine, decoded, spec), strict=True):
                if isinstance(answer, BaseException):
                    fail(error_line(item, answer), answer)
                    continue
                answer.warnings.extend(warnings)
                write_image_outputs(
                    out / item.rel, prepared.image, answer, str(item.path), spec.query, spec.overlay,
                    settings=spec.answer_settings(),
                )  # fmt: skip
                outcome.done += 1
                outcome.last = (item, answer) if outcome.done == 1 else None
            bar.update(len(batch))
    return outcome


def _answer(engine: Engine, decoded: list[tuple[Item, PreparedImage]], spec: RunSpec) -> list:
    """A Prediction (or the error it raised) per image; a batch that fails is retried image by image, so that one
    bad image does not take its batch-mates down with it."""
    images = [image for _, image in decoded]
    if spec.classes is not None and len(images) > 1:
        try:
            from .batch import segment_batch

            return segment_batch(engine, images, [spec.classes] * len(images), spec.chunk_size, spec.decoder)
        except QUESTION_ERRORS:
            raise
        except IMAGE_ERRORS:
            pass
    answers: list = []
    for image in images:
        try:
            if spec.query is not None:
                answers.append(engine.segment_query(image, spec.query))
            else:
                answers.append(engine.segment_classes(image, spec.classes, spec.chunk_size, spec.decoder))
        except QUESTION_ERRORS:
            raise
        except IMAGE_ERRORS as err:
            answers.append(err)
    return answers
