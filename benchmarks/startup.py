"""Start-up of `lasagna segment`: CPU seconds before the model loads, an old commit vs this tree, side by side.

    python benchmarks/startup.py [--old d803c2b] [--runs 5] [--top 10]

Each tree (the old commit in a temporary detached git worktree, removed at the end; this tree) runs
`python -m lasagna.cli segment examples/shapes.png --classes-file examples/shapes-classes.txt` (10 classes, the
embedded model) and `lasagna --help` in child processes with `PYTHONPATH=<tree>/src` and one thread, taking turns so
load drift hits both alike. A hook in the child wraps `Lasagna.from_pretrained` and reads the process's CPU seconds
(user + system, counted from the interpreter's start) when it is entered (before the model loads), when it returns,
and at exit; the medians over `--runs` are printed side by side. Then, from one `python -X importtime` run of each
tree: the top-level packages that cost most before the model loads and while it loads, the `lasagna` modules whose
imports cost most, and which chain of imports pulled in torch, transformers, torch._dynamo and sympy.

CPU seconds, not wall time, because a shared machine's load moves wall time far more; report numbers from a quiet one.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from trees import DEFAULT_OLD, ROOT, Tree, old_and_new, turns

IMAGE = ROOT / "examples" / "shapes.png"
CLASSES = ROOT / "examples" / "shapes-classes.txt"
HEAVY = ("torch", "transformers", "torch._dynamo", "sympy")
MARK = "lasagna-startup: the model loads"

# Run in the child as `python -c CHILD ARGS...`: the CLI as a user runs it, with `Lasagna.from_pretrained` wrapped.
# Importing `lasagna.api` first imports nothing the call would not import before the model loads anyway.
CHILD = f"""
import atexit, os, resource, sys
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
marks = {{}}
def report():
    import json
    marks["total"] = cpu()
    with open(os.environ["LASAGNA_STARTUP_OUT"], "w") as f:
        json.dump(marks, f)
atexit.register(report)
if os.environ.get("LASAGNA_STARTUP_HOOK") == "1":
    from lasagna.api import Lasagna
    load = Lasagna.from_pretrained
    def timed_load(*args, **kwargs):
        marks["before_load"] = cpu()
        marks["heavy_before_load"] = [m for m in {HEAVY!r} if m in sys.modules]
        marks["lasagna"] = sys.modules["lasagna"].__file__
        print({MARK!r}, file=sys.stderr, flush=True)
        model = load(*args, **kwargs)
        marks["loaded"] = cpu()
        return model
    Lasagna.from_pretrained = timed_load
import runpy
sys.argv = ["lasagna", *sys.argv[1:]]
runpy.run_module("lasagna.cli", run_name="__main__", alter_sys=False)
"""


def run_child(tree: Tree, cli_args: list[str], hook: bool, importtime: bool = False) -> tuple[dict, str]:
    """(the child's CPU marks, its stderr) for one `lasagna CLI_ARGS` call."""
    with tempfile.TemporaryDirectory(prefix="lasagna-startup-") as scratch:
        out = Path(scratch) / "marks.json"
        flags = ["-X", "importtime"] if importtime else []
        done = tree.run(
            [*flags, "-c", CHILD, *cli_args],
            f"lasagna {' '.join(cli_args)}",
            LASAGNA_STARTUP_OUT=str(out),
            LASAGNA_STARTUP_HOOK="1" if hook else "0",
        )
        marks = json.loads(out.read_text())
    if hook and "before_load" not in marks:
        raise RuntimeError(f"{tree.label}: `lasagna {' '.join(cli_args)}` never called Lasagna.from_pretrained")
    if hook and not marks["lasagna"].startswith(str(tree.root)):
        raise RuntimeError(f"{tree.label}: the child imported lasagna from {marks['lasagna']}, not {tree.root}")
    return marks, done.stderr


def segment_args(out: Path) -> list[str]:
    return ["segment", str(IMAGE), "--classes-file", str(CLASSES), "--out", str(out)]


def parse_importtime(stderr: str) -> tuple[list[tuple[int, int, int, str]], list[tuple[int, int, int, str]]]:
    """`-X importtime` lines as (self us, cumulative us, depth, module), split at the hook's mark: (before the model
    loads, after). Lines come in the order imports finish, so a module's importer is the next line less deep."""
    phases: list[list[tuple[int, int, int, str]]] = [[], []]
    phase = 0
    for line in stderr.splitlines():
        if line.startswith(MARK):
            phase = 1
            continue
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            phases[phase].append((int(m[1]), int(m[2]), len(m[3]) // 2, m[4]))
    return phases[0], phases[1]


def by_package(lines: list[tuple[int, int, int, str]]) -> list[tuple[str, float]]:
    """Self time summed per top-level package, in seconds, largest first."""
    total: dict[str, float] = defaultdict(float)
    for own, _, _, name in lines:
        total[name.split(".")[0]] += own / 1e6
    return sorted(total.items(), key=lambda kv: -kv[1])


def chain(lines: list[tuple[int, int, int, str]], module: str) -> str | None:
    """Who imported `module`: its importers up to the top, `lasagna` modules and the first outside one kept."""
    for i, (_, _, depth, name) in enumerate(lines):
        if name != module:
            continue
        path = [name]
        for _, _, d, parent in lines[i + 1 :]:
            if d < depth:
                path.append(parent)
                depth = d
        kept = [p for j, p in enumerate(path) if j <= 1 or p.startswith("lasagna") or j == len(path) - 1]
        return " <- ".join(dict.fromkeys(kept))
    return None


def report_imports(tree: Tree, stderr: str, top: int) -> None:
    before, after = parse_importtime(stderr)
    print(f"\n== {tree.label}: -X importtime (wall clock inside the child, inflated by importtime itself)")
    for title, lines in (("before the model loads", before), ("while it loads and runs", after)):
        packages = ", ".join(f"{name} {s:.2f}" for name, s in by_package(lines)[:top])
        print(f"  {title}: {sum(s for s, *_ in lines) / 1e6:.2f} s in {len(lines)} modules; by package: {packages}")
    ours = sorted((c, n) for _, c, _, n in before + after if n.startswith("lasagna"))[::-1][:top]
    print("  lasagna modules by cumulative import time: " + ", ".join(f"{n} {c / 1e6:.2f}" for c, n in ours))
    for module in HEAVY:
        where = "before the model loads" if chain(before, module) else "while it loads"
        found = chain(before, module) or chain(after, module)
        print(f"  {module}: {where}: {found}" if found else f"  {module}: not imported")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], usage="python benchmarks/startup.py [options]")
    ap.add_argument("--old", default=DEFAULT_OLD, help=f"the commit to compare with (default {DEFAULT_OLD})")
    ap.add_argument("--runs", type=int, default=5, help="runs of each call per tree (medians are printed)")
    ap.add_argument("--top", type=int, default=8, help="entries in each import list")
    args = ap.parse_args(argv)
    if args.runs < 1:
        raise ValueError(f"--runs must be >= 1, got {args.runs}")
    with old_and_new(args.old) as trees, tempfile.TemporaryDirectory(prefix="lasagna-startup-") as scratch:
        seconds: dict[str, dict[str, list[float]]] = {t.label: defaultdict(list) for t in trees}
        heavy: dict[str, list[str]] = {}
        for n, tree in enumerate(turns(args.runs, trees)):
            # why a folder per run: the trees write different layouts, and this one refuses a folder it did not write
            marks, _ = run_child(tree, segment_args(Path(scratch) / f"out-{n}"), hook=True)
            row = seconds[tree.label]
            row["segment: CPU s before the model loads"].append(marks["before_load"])
            row["segment: CPU s loading the model"].append(marks["loaded"] - marks["before_load"])
            row["segment: CPU s in all"].append(marks["total"])
            heavy[tree.label] = marks["heavy_before_load"]
            help_marks, _ = run_child(tree, ["--help"], hook=False)
            row["--help: CPU s in all"].append(help_marks["total"])
        old, new = trees
        print(
            f"lasagna segment {IMAGE.relative_to(ROOT)} with {len(CLASSES.read_text().splitlines())} classes "
            f"(embedded model), and lasagna --help; medians of {args.runs} runs per tree, taking turns; "
            f"CPU s = user + system since the interpreter started; 1 thread"
        )
        print(f"{'':40s} {old.label:>10s} {new.label:>10s} {'old/new':>8s}")
        for key in seconds[new.label]:
            a, b = (statistics.median(seconds[t.label][key]) for t in trees)
            print(f"{key:40s} {a:>10.2f} {b:>10.2f} {a / b:>7.1f}x")
        for tree in trees:
            found = ", ".join(heavy[tree.label]) or "none"
            print(f"{tree.label}: of {', '.join(HEAVY)}, imported before the model loads: {found}")
        for tree in trees:
            _, stderr = run_child(tree, segment_args(Path(scratch) / f"out-{tree.label}"), hook=True, importtime=True)
            report_imports(tree, stderr, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
