"""`lasagna segment PATH... --out DIR`: images (files, folders, globs, @lists) with a class list or a query -> one
folder of results per image plus COCO files for the run (`infer.run`); resumable, batched, and sharded over the
processes of `accelerate launch -m lasagna.cli segment ...`."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path


def register(sub) -> None:
    from ..devices import add_arguments

    p = sub.add_parser(
        "segment",
        help="segment images (files, folders, globs, @list.txt) with a class list or a referring/reasoning query",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="image files, folders, globs (quote them) or @list.txt (one PATH per line)",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--classes", help='comma-separated class names, e.g. "sky, red circle, grass"')
    what.add_argument("--classes-file", help="a text file with one class name per line")
    what.add_argument("--query", help="a referring or reasoning query")
    p.add_argument("--model", help="checkpoint folder (default: the embedded ShapeWorld model)")
    p.add_argument("--out", default="segment-out", help="output folder (default: segment-out)")
    p.add_argument("--recursive", action="store_true", help="search folders' subfolders too")
    p.add_argument("--no-overlay", dest="overlay", action="store_false", help="do not draw overlay.png")
    p.add_argument("--strict", action="store_true", help="stop at the first image that fails (default: skip it)")
    p.add_argument("--overwrite", action="store_true", help="redo images already done (and allow other settings)")
    p.add_argument("--batch-size", type=int, default=1, help="images per batch for class lists (default 1)")
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes that decode and preprocess images (default: up to 4)",
    )
    p.add_argument("--chunk-size", type=int, default=16, help="classes per chunk (default 16)")
    p.add_argument("--decoder", choices=["free", "template"], help="default: the checkpoint's choice")
    add_arguments(p)
    p.set_defaults(func=run)


def read_classes(args) -> list[str]:
    """The class names of `--classes "a, b"` or `--classes-file F` (one a line; blank lines and `#` lines skipped)."""
    if args.classes is not None:
        names = [c.strip() for c in args.classes.split(",")]
    else:
        from .listing import read_text_file

        names = [line.strip() for line in read_text_file(Path(args.classes_file), "classes file").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ValueError("the class list is empty")
    return names


def _shard():
    """This process's `Shard` when launched over several processes (accelerate or torchrun), else one alone. Only
    then is accelerate imported: it takes seconds."""
    from .run import Shard

    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return Shard()
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState(cpu=not torch.cuda.is_available())  # why: without a GPU it would run as one process each
    if state.num_processes < 2:
        raise RuntimeError(f"launched as {os.environ['WORLD_SIZE']} processes, but accelerate set up one")
    return Shard(state.process_index, state.num_processes, state.wait_for_everyone, gather_object)


def run(args) -> int:
    if not args.out.strip():
        raise ValueError("--out must name a folder, got an empty string")
    from ..api import Lasagna
    from ..devices import load_options
    from .inputs import check_classes, check_query
    from .listing import find_images
    from .run import RunSpec, check_out, run_folder

    out = Path(args.out)
    items = find_images(args.paths, recursive=args.recursive, out=out)
    spec = RunSpec(
        model=str(Path(args.model).resolve()) if args.model else "embedded:shapeworld-small",
        query=args.query,
        classes=None if args.query is not None else read_classes(args),
        chunk_size=args.chunk_size,
        overlay=args.overlay,
    )
    if spec.chunk_size < 1:
        raise ValueError(f"--chunk-size must be >= 1, got {spec.chunk_size}")
    check_out(out, spec, overwrite=True)  # a folder of the user's is refused before the model loads
    model = Lasagna.from_pretrained(args.model, **load_options(args))
    notes: list[str] = []
    if spec.query is not None:
        check_query(spec.query, model.engine.reserved)
    else:
        spec.classes = check_classes(spec.classes, model.engine.reserved)
        spec.decoder = args.decoder or model.config.default_decoder
        notes = model.vocabulary_warnings(spec.classes)
    model.engine.check_fits(spec.classes, spec.query, spec.chunk_size, spec.decoder)
    shard = _shard()
    if shard.rank == 0:
        for note in notes:
            print(f"warning: {note}", file=sys.stderr)
    with warnings.catch_warnings():  # why: printed once above, one line per name, not as Python warnings
        warnings.simplefilter("ignore", UserWarning)
        outcome = run_folder(
            model.engine,
            items,
            out,
            spec,
            overwrite=args.overwrite,
            batch_size=args.batch_size,
            workers=args.workers,
            strict=args.strict,
            shard=shard,
            warnings=notes,
            progress=shard.rank == 0,
        )
    if outcome.last is not None and len(items) == 1:  # one image: its answer, as the command always printed it
        _print_answer(outcome.last[1], notes, args.query is not None)
    if shard.rank == 0:
        _print_summary(outcome, out)
    return 1 if outcome.failed else 0


def _print_answer(pred, notes: list[str], is_query: bool) -> None:
    """An image's answer: its warnings (but those of the class list, printed once), then per class or mask."""
    for warning in pred.warnings:
        if warning not in notes:
            print(f"warning: {warning}", file=sys.stderr)
    if is_query:
        print(f"answer: {pred.text}")
        print(f"{len(pred.masks)} mask(s)")
        return
    for c in pred.classes:
        state = f"present  area {int(c.mask.sum()):>7d}" if c.present else "absent"
        print(f"  {c.name:<24s} {state:<22s} p={c.score:.2f}")


def _print_summary(outcome, out: Path) -> None:
    from .run import failure_text

    print(f"{outcome.done} image(s) segmented, {outcome.skipped} already done, {len(outcome.failed)} failed")
    for line in outcome.failed[:5]:
        print(f"failed: {failure_text(line)}", file=sys.stderr)
    if outcome.failed:
        print(f"failed images are listed in {out / 'errors.jsonl'}", file=sys.stderr)
    if outcome.last is not None:
        written = ", ".join(sorted(p.name for p in (out / outcome.last[0].rel).iterdir()))
        print(f"wrote {out / outcome.last[0].rel}/: {written}")
    print(
        f"wrote {out}/: predictions.json ({outcome.predictions} mask(s) over {outcome.images} image(s)), "
        "categories.json, images.json, errors.jsonl, run.json"
    )
