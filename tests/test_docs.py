"""The user docs hold together: their relative links and the repository paths they name exist, and every flag of a
`lasagna` command they show is one that command takes. Parsers only: no model is loaded, nothing is run.

docs/history.md is a record of past experiments (its commands ran at their commits), so it is left out."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from lasagna.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "history.md")]
LINK = re.compile(r"\]\(([^)\s]+)\)")
PATH = re.compile(r"(?<![\w/.-])((?:src|tests|benchmarks|tools|configs|docs|examples)/[\w./-]*\w)")
COMMAND = re.compile(r"(?:^|\s)lasagna(?:\.cli)?\s+(.+)")
GLOBAL_OPTIONS = {"--debug", "--version", "--help", "-h"}


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def commands(text: str) -> list[str]:
    """The `lasagna ...` command lines of a Markdown text: from shell code blocks (continuation lines joined,
    comments dropped) and from inline code spans."""
    found = []
    blocks = re.findall(r"```([^\n]*)\n(.*?)```", text, flags=re.S)
    for lang, block in blocks:
        if lang.strip() not in ("", "bash", "sh", "console"):  # Python, JSON, YAML: no command lines
            continue
        for line in block.replace("\\\n", " ").splitlines():
            match = COMMAND.search(line.lstrip("$ "))
            if match:
                found.append(match.group(1))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        match = COMMAND.search(span)
        if match:
            found.append(match.group(1))
    return found


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's subcommands by name ({} for a leaf)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def unknown_flags(line: str, root: argparse.ArgumentParser) -> list[str]:
    """The `--flags` of one command line that its (sub)command does not take, or a note for an unknown command."""
    words = shlex.split(line, comments=True)
    parser, i = root, 0
    while i < len(words) and words[i] in GLOBAL_OPTIONS:
        i += 1
    if i < len(words) and words[i] == "COMMAND":  # a placeholder: only the global options are checked
        return [w for w in words[:i] if w not in root._option_string_actions]
    while i < len(words) and subparsers(parser):
        choices = subparsers(parser)
        if words[i] not in choices:
            return [f"unknown command {words[i]!r}"]
        parser, i = choices[words[i]], i + 1
    flags = [w.strip("[]").split("=")[0] for w in words[i:] if w.strip("[]").startswith("--")]
    return [f for f in flags if f not in parser._option_string_actions]


def test_commands_are_found_in_the_readme():
    lines = commands((ROOT / "README.md").read_text())
    assert any(line.startswith("segment photos/ --recursive") for line in lines)
    assert any(line.startswith("metrics semseg --pred") for line in lines)


def test_a_flag_no_command_takes_is_reported():
    root = build_parser()
    assert unknown_flags("segment x.png --classes a --no-such-flag", root) == ["--no-such-flag"]
    assert unknown_flags("eval [--save-preds DIR]", root) == []
    assert unknown_flags("convert nonsense --src x", root) == ["unknown command 'nonsense'"]


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_flag_of_a_lasagna_command_exists(doc):
    root = build_parser()
    bad = {line: flags for line in commands(doc.read_text()) if (flags := unknown_flags(line, root))}
    assert not bad, f"{doc.name}: commands with flags lasagna does not take: {bad}"


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_relative_links_point_to_files(doc):
    targets = [t.split("#")[0] for t in LINK.findall(doc.read_text()) if not re.match(r"[a-z]+:", t)]
    missing = [t for t in targets if t and not (doc.parent / t).exists()]
    assert not missing, f"{doc.name}: links to missing files: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_repository_paths_named_exist(doc):
    named = {p for p in PATH.findall(doc.read_text()) if "*" not in p and "<" not in p}
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{doc.name}: names paths that do not exist: {missing}"
