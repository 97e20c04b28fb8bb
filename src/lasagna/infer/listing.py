"""Which images a `lasagna segment` run reads, and the output folder each one gets.

A PATH is a file, a folder (its images; with `recursive`, those of its subfolders too), a glob (`imgs/*/*.jpg`,
`**` for any depth) or `@list.txt` (one PATH per line, relative ones read from the list's folder; blank lines and
lines starting with `#` are skipped). An image's output folder, `<rel>`, is its path relative to the folder it was
found in (a glob's folder is the part before the first wildcard, a list's is the list's own folder) with the suffix
dropped, or its bare name for a file named directly: `imgs/a/b.jpg` found under `imgs/` writes `OUT/a/b/`.

Two images must never share a folder, nor may one image's folder hold another's (`a.png` and `a/b.png`: the first
folder is replaced whole when rewritten), nor may a folder take the name of a run-level file; `find_images` names
such clashes before any work is done.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
"""Suffixes (any case) that folders and globs are searched for; a file named directly is read whatever its suffix."""

RUN_FILES = frozenset({"run.json", "predictions.json", "categories.json", "images.json", "errors.jsonl"})
"""The run-level files of an output folder: no image's folder may take one of these names."""


class ImageListError(ValueError):
    """A PATH that names no image, a list file that cannot be read, or two images that would share an output folder."""


class TextFileError(ValueError):
    """A list or classes file that is a folder, or not UTF-8 text."""


@dataclass(frozen=True)
class Item:
    """One image to segment: `path` as the user's PATH leads to it, `rel` its output folder under OUT (POSIX form,
    no suffix), `file_name` its path relative to where it was found (COCO's `file_name`)."""

    path: Path
    rel: str
    file_name: str


def read_text_file(path: Path, what: str) -> str:
    """A text file the user wrote (`what` names it in errors): UTF-8, a byte-order mark dropped (Windows editors
    write one, and it would stick to the first line), line ends left to `splitlines`."""
    if path.is_dir():
        raise TextFileError(f"{what} {path} is a folder, not a text file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise TextFileError(f"{what} {path} is not UTF-8 text ({err.reason} at byte {err.start})") from err


def find_images(paths: list[str], recursive: bool = False, out: Path | None = None) -> list[Item]:
    """Every image the PATHs name, once each, sorted by output folder, leaving out those under `out` (a run's
    overlays and label maps, where OUT lies inside an input folder); raises `ImageListError` (or FileNotFoundError
    for a missing file) naming the bad PATH or the clash."""
    items: list[Item] = []
    for spec in paths:
        items += _expand(spec, recursive, Path.cwd(), from_list=False)
    skip = None if out is None else Path(out).resolve()
    unique: dict[Path, Item] = {}
    for item in items:  # a file named twice (directly and through its folder) is read once, where first named
        resolved = item.path.resolve()
        if skip is None or not resolved.is_relative_to(skip):
            unique.setdefault(resolved, item)
    found = sorted(unique.values(), key=lambda item: item.rel)
    if not found:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        outputs = f"; those under {out} are the run's own outputs" if items else ""
        nested = not recursive and any(_has_subfolders(p) for p in paths)
        deeper = "; it has subfolders: pass --recursive" if nested else ""
        raise ImageListError(f"no images found in {', '.join(paths)} (searched for {suffixes}{outputs}){deeper}")
    check_clashes(found)
    return found


def _expand(spec: str, recursive: bool, base: Path, from_list: bool) -> list[Item]:
    """The images of one PATH; `base` is where a relative PATH of a list file starts."""
    if not spec.strip():
        raise ImageListError("an empty PATH was given; name a file, folder, glob or @list.txt")
    if spec.startswith("@") and not from_list:
        return _read_list(Path(spec[1:]), recursive)
    path = Path(spec) if Path(spec).is_absolute() or not from_list else base / spec
    if path.is_dir():
        return _folder(path, recursive)
    if path.is_file():
        inside = from_list and not Path(spec).is_absolute() and ".." not in Path(spec).parts
        rel = PurePosixPath(Path(spec).as_posix()) if inside else PurePosixPath(path.name)
        return [_item(path, rel)]
    if _is_glob(spec):
        return _glob(path)
    raise FileNotFoundError(f"image file or folder not found: {path}")


def _read_list(listing: Path, recursive: bool) -> list[Item]:
    items = []
    for number, line in enumerate(read_text_file(listing, "list file").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            raise ImageListError(f"{listing} line {number}: a list file cannot name another list ({line})")
        try:
            items += _expand(line, recursive, listing.parent, from_list=True)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{listing} line {number}: {err}") from err
    return items


def _folder(folder: Path, recursive: bool) -> list[Item]:
    pattern = "**/*" if recursive else "*"
    items = []
    for path in folder.glob(pattern):
        rel = path.relative_to(folder)
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not _hidden(rel):
            items.append(_item(path, PurePosixPath(rel.as_posix())))
    return items


def _glob(path: Path) -> list[Item]:
    parts = path.parts
    fixed = next(i for i, part in enumerate(parts) if _is_glob(part))
    root = Path(*parts[:fixed]) if fixed else Path()
    items = []
    for match in sorted(glob.glob(str(path), recursive=True)):
        found = Path(match)
        rel = found.relative_to(root) if fixed else found
        if found.is_file() and found.suffix.lower() in IMAGE_SUFFIXES:
            items.append(_item(found, PurePosixPath(rel.as_posix())))
    return items


def _item(path: Path, rel: PurePosixPath) -> Item:
    stem = rel.with_name(rel.name[: -len(rel.suffix)] if rel.suffix else rel.name)
    return Item(path=path, rel=str(stem), file_name=str(rel))


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _has_subfolders(spec: str) -> bool:
    path = Path(spec)
    return path.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def check_clashes(items: list[Item]) -> None:
    """Refuse two images with one output folder (names compared without case, as some file systems do), a folder
    inside another image's folder, and a folder named as a run-level file."""
    owner: dict[str, Item] = {}
    for item in items:
        key = item.rel.casefold()
        if key in owner:
            apart = owner[key].path.parent != item.path.parent  # else a parent folder would not tell them apart
            raise ImageListError(
                f"{owner[key].path} and {item.path} would both write to the output folder {item.rel}/; rename one"
                + (", or give their common parent folder with --recursive" if apart else "")
            )
        owner[key] = item
        top = item.rel.split("/", 1)[0]
        if top.casefold() in RUN_FILES:
            raise ImageListError(f"{item.path} would write to {item.rel}/, the name of a run-level file; rename it")
    for item in items:
        parents = PurePosixPath(item.rel).parents
        for parent in list(parents)[:-1]:
            other = owner.get(str(parent).casefold())
            if other is not None:
                raise ImageListError(
                    f"{item.path} would write inside {parent}/, the output folder of {other.path}; rename one of them"
                )
