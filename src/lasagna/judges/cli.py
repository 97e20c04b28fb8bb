"""`lasagna calibrate`, `lasagna train-verifier` and `lasagna train-picker`: the judges fit on a model's answers."""

from __future__ import annotations


def register(sub) -> None:
    c = sub.add_parser("calibrate", help="fit the verifiers' fusions on held-out scenes, write the model")
    c.add_argument("--model", required=True, help="a checkpoint folder of ours whose model has a verifier")
    c.add_argument("--out", required=True, help="where the calibrated model is written")
    c.add_argument(
        "--dataset", default="shapeworld", help="semantic (presence) or referring (query) data: `lasagna data` names"
    )
    c.add_argument("--split", default="val", help="held-out scenes: never the split you report")
    c.add_argument("--root", help="data root (default: $LASAGNA_DATA)")
    c.add_argument("--limit", type=int, default=200, help="first N scenes")
    c.add_argument("--chunk-size", type=int, default=16)
    c.add_argument(
        "--absent-weight",
        type=float,
        default=1.0,
        help="presence: what a false alarm costs against a miss (1 = alike; see tools/operating_points.py)",
    )
    c.add_argument("--no-target-weight", type=float, default=1.0, help="queries: the same for no-target decisions")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=run_calibrate)
    v = sub.add_parser(
        "train-verifier", help="train a query verifier on the frozen model's own answers, calibrate it, write the model"
    )
    _answer_args(v, "query verifier")
    v.add_argument("--epochs", type=int, default=30, help="passes over their answers")
    v.add_argument("--calibrate-split", default="val", help="held-out scenes its fusion is fit on")
    v.add_argument("--calibrate-limit", type=int, default=200, help="first N scenes of --calibrate-split")
    v.set_defaults(func=run_train_verifier)
    k = sub.add_parser(
        "train-picker", help="train an instance picker on the frozen model's own answers, check it, write the model"
    )
    _answer_args(k, "instance picker")
    k.add_argument("--epochs", type=int, default=20, help="passes over their answers")
    k.add_argument("--check-split", default="val", help="held-out scenes it is checked on")
    k.add_argument("--check-limit", type=int, default=200, help="first N scenes of --check-split")
    k.set_defaults(func=run_train_picker)


def _answer_args(p, part: str) -> None:
    """The arguments `train-verifier` and `train-picker` share: the model, its answers and the training loop."""
    p.add_argument("--model", required=True, help=f"a checkpoint folder of ours (given a {part} if it has none)")
    p.add_argument("--out", required=True, help=f"where the model with its trained {part} is written")
    p.add_argument("--dataset", default="shapeworld", help="referring data: `lasagna data` names")
    p.add_argument("--split", default="train", help="the scenes it trains on")
    p.add_argument("--root", help="data root (default: $LASAGNA_DATA)")
    p.add_argument("--scenes", type=int, default=6000, help="first N scenes of --split")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help=f"start from a new {part} even if the model has one")
    p.add_argument("--no-target-rate", type=float, help="ShapeWorld: share of expressions without a target")
    p.add_argument("--twins", action="store_true", help="ShapeWorld: each relation's and extreme's opposite too")
    p.add_argument(
        "--reasoning",
        action="store_true",
        help="also the reasoning queries of the same scenes (ShapeWorld) or of --reasoning-dataset",
    )
    p.add_argument("--reasoning-dataset", help="where the reasoning queries come from (implies --reasoning)")
    p.add_argument(
        "--answers", help="a file for the decoded answers: read if it exists (same model and data), else written"
    )
    p.add_argument("--reasoning-answers", help="the same for the answers to the reasoning queries (with --reasoning)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="longest answer decoded to a query")
    p.add_argument("--overwrite", action="store_true")


def run_calibrate(args) -> int:
    import json
    from pathlib import Path

    from ..api import Lasagna
    from ..checkpoint import save_pretrained
    from ..eval.evaluate import open_eval_sources
    from .calibrate import calibrate_model

    lasagna = Lasagna.from_pretrained(args.model, device="cpu")  # why: small fits, tested on the CPU only
    model = lasagna.model
    sources = open_eval_sources(args.dataset, args.split, args.root)
    try:
        weights = {"presence": args.absent_weight, "query": args.no_target_weight}
        report = calibrate_model(lasagna, sources, args.limit, args.chunk_size, absent_weights=weights)
    except ValueError as e:
        raise ValueError(f"{args.model} on {args.dataset} {args.split}: {e}") from e
    dtype = next(model.parameters()).dtype
    out = save_pretrained(
        model, lasagna.tokenizer, Path(args.out), dtype, args.overwrite, judges=lasagna.judges, about=lasagna.header
    )
    print(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return 0


def run_train_verifier(args) -> int:
    from .answers import train_on_answers
    from .calibrate import calibrate_queries

    def train(lasagna, answers) -> dict:
        verifier, embed = lasagna.judges.query_verifier, lasagna.model.embed_tokens
        losses = train_on_answers(verifier, answers, embed, args.epochs, args.batch_size, args.lr, args.seed)
        return {"decisions": len(answers), "losses": losses}

    def check(lasagna, held_out) -> tuple[str, dict]:
        return "calibration", calibrate_queries(lasagna, held_out, args.calibrate_limit, tokens=args.max_new_tokens)

    return _run_on_answers(args, "query_verifier", args.calibrate_split, train, check)


def run_train_picker(args) -> int:
    from .answers import collect_answers
    from .picking import picker_report, train_picker

    def train(lasagna, answers) -> dict:
        picker, embed = lasagna.judges.instance_picker, lasagna.model.embed_tokens
        losses, used = train_picker(picker, answers, embed, args.epochs, args.batch_size, args.lr, args.seed)
        return {"decisions": used, "losses": losses}

    def check(lasagna, held_out) -> tuple[str, dict]:
        answers = collect_answers(lasagna, held_out, args.check_limit, max_new_tokens=args.max_new_tokens)
        return "check", picker_report(lasagna.judges.instance_picker, answers, lasagna.model.embed_tokens)

    return _run_on_answers(args, "instance_picker", args.check_split, train, check)


def _run_on_answers(args, part: str, held_out_split: str, train, check) -> int:
    """`train-verifier` and `train-picker`: the model gains a fresh `part` if it has none (or `--fresh`), `train`s it
    on the model's answers to `--split`, `check`s it on `held_out_split` (the verifier's fusion is fit there), and the
    model is written to `--out`."""
    import json
    import time
    from pathlib import Path

    from ..api import Lasagna
    from ..checkpoint import save_pretrained
    from ..config import JudgesConfig
    from . import Judges

    out = Path(args.out)
    if out.exists() and not args.overwrite:  # why here: before the work (an hour for the verifier), not after
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    train_source = _referring_source(args.dataset, args.split, args.root, args.no_target_rate, args.twins)
    held_out = _referring_source(args.dataset, held_out_split, args.root, None, False)
    lasagna = Lasagna.from_pretrained(args.model, device="cpu")  # why: small fits, tested on the CPU only
    model = lasagna.model
    dtype = next(model.parameters()).dtype
    judges = lasagna.judges if lasagna.judges is not None else Judges.for_model(model, JudgesConfig())
    if args.fresh:
        setattr(judges, part, None)
    judges.add(JudgesConfig(**{part: True}), seed=args.seed)
    lasagna = Lasagna(model, lasagna.tokenizer, judges, lasagna.header, lasagna.folder)
    start = time.perf_counter()
    summary = train(lasagna, _train_answers(lasagna, train_source, args))
    getattr(judges, part).to(dtype)  # why before checking: it is checked (and a fusion fit on it) as it will be saved
    name, report = check(lasagna, held_out)
    summary = {**summary, "losses": [round(x, 4) for x in summary["losses"]]}
    summary["seconds"] = round(time.perf_counter() - start, 1)
    saved = save_pretrained(model, lasagna.tokenizer, out, dtype, args.overwrite, judges=judges, about=lasagna.header)
    print(json.dumps({"train": summary, name: report}, indent=1))
    print(f"wrote {saved}")
    return 0


def _train_answers(lasagna, source, args):
    """The answers to train on: decoded, or read from (and otherwise kept in) `--answers` and `--reasoning-answers`.
    A file is known by what it answers and by the weights that answered (`answering_digest`): a model with a verifier
    or a picker added reads the files of the model it was added to."""
    from .answers import answering_digest, join_answers

    asked = args.reasoning or args.reasoning_dataset
    if args.reasoning_answers and not asked:  # why first: before an hour of decoding
        raise ValueError("--reasoning-answers keeps the answers to reasoning queries: ask for them with --reasoning")
    weights = answering_digest(lasagna.model)
    keys = ("dataset", "split", "scenes", "no_target_rate", "twins")
    about = {"weights": weights, **{k: getattr(args, k) for k in keys}}
    answers = _kept_answers(lasagna, source, args.scenes, args.answers, about, args.max_new_tokens)
    if asked:
        reasoning = _reasoning_source(args.reasoning_dataset or args.dataset, args.split, args.root)
        about = {"weights": weights, "reasoning": reasoning.name, "scenes": args.scenes}
        kept = _kept_answers(lasagna, reasoning, args.scenes, args.reasoning_answers, about, args.max_new_tokens)
        answers = join_answers(answers, kept)
    return answers


def _kept_answers(lasagna, source, scenes: int, path, description: dict, tokens: int):
    from pathlib import Path

    from .answers import collect_answers, load_answers, save_answers

    if path and Path(path).exists():
        return load_answers(Path(path), description)
    answers = collect_answers(lasagna, source, scenes, max_new_tokens=tokens)
    if path:
        save_answers(answers, Path(path), description)
    return answers


def _referring_source(dataset: str, split: str, root, no_target_rate, twins: bool):
    from ..eval.evaluate import open_eval_sources

    if dataset == "shapeworld":
        from ..shapeworld import ShapeWorldReferring

        rate = {} if no_target_rate is None else {"no_target_rate": no_target_rate}
        return ShapeWorldReferring(split, twins=twins, **rate)
    if no_target_rate is not None or twins:
        raise ValueError(
            f"--no-target-rate and --twins apply to ShapeWorld only; {dataset!r} brings its own expressions"
        )
    sources = open_eval_sources(dataset, split, root)
    if "referring" not in sources:
        raise ValueError(f"{dataset!r} {split} has no referring expressions to train a query verifier on")
    return sources["referring"]


def _reasoning_source(dataset: str, split: str, root):
    """A dataset's reasoning queries of `split` as referring records (`answers.ReasoningQueries`)."""
    from ..eval.evaluate import open_eval_sources
    from .answers import ReasoningQueries

    sources = open_eval_sources(dataset, split, root)
    if "reasoning" not in sources:
        raise ValueError(f"{dataset!r} {split} has no reasoning queries; name one that has with --reasoning-dataset")
    return ReasoningQueries(sources["reasoning"])
