"""The docs as instructions: every `instantroom ...` command they show names a command and
options that exist, every INSTANTROOM_* variable they name is read somewhere, and the
relay's options table in docs/self-hosting.md lists every option with its real variable
and default. Checked against the real argument parser, in-process: no relay runs."""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import fields
from pathlib import Path

import pytest

from instantroom.cli import build_parser
from instantroom.relay.config import RelayConfig, env_name

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "SECURITY.md",
    ROOT / "RELEASING.md",
    ROOT / "PROTOCOL.md",
    ROOT / "benchmarks" / "README.md",
]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+)`")
# `instantroom ARGS`, `.venv/bin/instantroom ARGS`, `./scripts/run ARGS` (which runs
# `instantroom ARGS`), up to the end of the shell command.
COMMAND = re.compile(
    r"(?:^|(?<=[\s(\"']))(?:[\w.~/-]*/)?(?:instantroom|scripts/run)(?=\s)([^|;&]*)"
)


def shown_commands(text: str) -> list[str]:
    """The argument lists of the commands in code blocks and code spans."""
    pieces: list[str] = []
    for block in FENCE.finditer(text):
        pieces += block.group(1).replace("\\\n", " ").splitlines()
    pieces += SPAN.findall(FENCE.sub("", text))
    commands = []
    for piece in pieces:
        piece = re.sub(r"^\s*\$\s+", "", piece)  # a console prompt
        piece = re.split(r"\s#", piece)[0]  # a shell comment (an invite link's # has no space)
        commands += [m.group(1).strip() for m in COMMAND.finditer(piece)]
    return commands


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def problems_with(args: str) -> list[str]:
    """What in `instantroom ARGS` the parser would not take; nothing for other programs'
    lines that only name the service (`systemctl restart instantroom`, an nginx upstream)."""
    try:
        words = shlex.split(args)
    except ValueError:
        words = args.split()
    if not words or not re.fullmatch(r"[a-z][a-z/-]*|--?[a-z-]+", words[0]):
        return []
    parser = build_parser()
    commands = subcommands(parser)
    while commands and words and not words[0].startswith("-"):
        # `key new/check/show` names several at once.
        named = words.pop(0).split("/")
        unknown = [name for name in named if name not in commands]
        if unknown:
            return [f"no command {' or '.join(unknown)!r} (there are: {', '.join(commands)})"]
        parser = commands[named[0]]
        commands = subcommands(parser)
    known = options(parser)
    return [
        f"no option {word.split('=')[0]}"
        for word in words
        if word.startswith("--") and word.split("=")[0] not in known
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_shown_exists_with_its_options(doc: Path) -> None:
    commands = shown_commands(doc.read_text(encoding="utf-8"))
    wrong = {args: problems for args in commands if (problems := problems_with(args))}
    assert not wrong, f"{doc.name}: commands that `instantroom` would refuse: {wrong}"


def test_the_docs_show_the_commands_a_newcomer_runs() -> None:
    """The extraction above finds what it checks (else the test above passes vacuously)."""
    shown = {args.split()[0] for doc in DOCS for args in shown_commands(doc.read_text()) if args}
    assert {"serve", "new", "join", "chat", "send", "listen", "key"} <= shown


def documented_variables() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for doc in DOCS:
        for name in re.findall(r"\bINSTANTROOM_[A-Z_]*[A-Z]\b", doc.read_text()):
            found.setdefault(name, []).append(doc.name)
    return found


def test_every_environment_variable_named_is_read_somewhere() -> None:
    relay = {env_name(spec.name) for spec in fields(RelayConfig)}
    code = "\n".join(
        path.read_text(encoding="utf-8")
        for folder in (ROOT / "src", ROOT / "scripts")
        for path in folder.rglob("*")
        if path.is_file() and path.suffix in ("", ".py", ".js", ".sh")
    )
    unread = {
        name: docs
        for name, docs in documented_variables().items()
        if name not in relay and not re.search(rf"\b{name}\b", code)
    }
    assert not unread, f"variables the docs name but nothing reads: {unread}"


def options_table() -> dict[str, tuple[str, str]]:
    """docs/self-hosting.md's table: option -> (environment variable, default)."""
    text = (ROOT / "docs" / "self-hosting.md").read_text(encoding="utf-8")
    section = text.split("## Options", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`--"):
            option = cells[0].strip("`").split()[0]
            rows[option] = (cells[1].strip("`"), cells[2])
    return rows


def shown_default(cell: str) -> object:
    """A default cell as the value it stands for: `8080`, `2678400.0` (31 days), off, empty."""
    words = {"empty": "", "none": "", "off": False, "on": True}
    if cell in words:
        return words[cell]
    value = re.match(r"`([^`]*)`", cell)
    assert value, f"a default cell that is neither a `value` nor {sorted(words)}: {cell!r}"
    return value.group(1)


def test_the_options_table_lists_every_relay_option_with_its_variable_and_default() -> None:
    table = options_table()
    defaults = RelayConfig()
    expected = {
        "--" + spec.name.replace("_", "-"): (env_name(spec.name), getattr(defaults, spec.name))
        for spec in fields(RelayConfig)
    }
    assert set(table) == set(expected), (
        f"missing from the table: {sorted(set(expected) - set(table))}; "
        f"not options: {sorted(set(table) - set(expected))}"
    )
    for option, (variable, default) in expected.items():
        shown_variable, cell = table[option]
        assert shown_variable == variable, option
        shown = shown_default(cell)
        if isinstance(default, bool) or default == "":
            assert shown == default, (option, cell, default)
        else:
            assert shown == str(default), (option, cell, default)
