"""The protocol core does no I/O, and the relay's part of it cannot decrypt.

Checked on the source (every import and every call of a builtin that touches the outside)
and, for the relay's modules, on what importing them actually loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import instantroom.protocol

CORE = Path(instantroom.protocol.__file__).resolve().parent
MODULES = sorted(path.stem for path in CORE.glob("*.py") if path.stem != "__init__")
RELAY_MODULES = ["codes", "errors", "frames", "join"]
SECRET_MODULES = {"kdf", "envelope", "minikey"}

FORBIDDEN_IMPORTS = {
    "socket", "asyncio", "os", "time", "random", "secrets", "pathlib", "io", "subprocess",
    "logging", "datetime", "urllib", "http", "sys", "shutil", "tempfile", "select",
    "selectors", "ssl", "signal", "threading", "multiprocessing", "ctypes", "uuid",
    "importlib", "builtins", "requests", "httpx", "websockets",
}  # fmt: skip
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "compile", "__import__", "breakpoint"}


def _imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(absolute top-level packages, sibling modules of the core) that ``tree`` imports."""
    absolute: set[str] = set()
    siblings: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module is not None:
                parts = node.module.split(".")
                if parts[:2] == ["instantroom", "protocol"] and len(parts) > 2:
                    siblings.add(parts[2])
                elif parts[:2] == ["instantroom", "protocol"]:
                    siblings.update(alias.name for alias in node.names)
                else:
                    absolute.add(parts[0])
            elif node.level == 1 and node.module is not None:
                siblings.add(node.module.split(".")[0])
            elif node.level == 1:
                siblings.update(alias.name for alias in node.names)
            else:
                absolute.add("<outside the core>")
    return absolute, siblings


def _calls(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                names.add(node.func.id)
            elif isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
    return names


def _tree(module: str) -> ast.Module:
    return ast.parse((CORE / f"{module}.py").read_text("utf-8"))


def test_the_core_is_all_here() -> None:
    assert set(MODULES) >= {"codes", "envelope", "errors", "frames", "join", "kdf", "minikey"}


@pytest.mark.parametrize("module", [*MODULES, "__init__"])
def test_no_io_imports(module: str) -> None:
    absolute, _ = _imports(_tree(module))
    assert not absolute & FORBIDDEN_IMPORTS
    assert "<outside the core>" not in absolute


@pytest.mark.parametrize("module", [*MODULES, "__init__"])
def test_no_io_calls(module: str) -> None:
    calls = _calls(_tree(module))
    assert not calls & FORBIDDEN_CALLS
    # Reading or writing files by method, e.g. Path.read_text, open_text.
    assert not {name for name in calls if name.startswith(("read_", "write_"))}


def _sibling_closure(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(_imports(_tree(module))[1])
    return seen - {start}


@pytest.mark.parametrize("module", RELAY_MODULES)
def test_relay_modules_reach_no_secret(module: str) -> None:
    assert not _sibling_closure(module) & SECRET_MODULES


def test_frames_imports_only_codes_errors_join() -> None:
    assert _imports(_tree("frames"))[1] == {"codes", "errors", "join"}


def test_relay_modules_load_no_secret_module() -> None:
    """What importing the relay's modules really loads, in a fresh interpreter."""
    imports = "; ".join(f"import instantroom.protocol.{m}" for m in RELAY_MODULES)
    script = (
        f"import sys; {imports}; "
        "print(' '.join(m for m in sys.modules if m.startswith('instantroom')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded = {name.rsplit(".", 1)[-1] for name in result.stdout.split()}
    assert set(RELAY_MODULES) <= loaded
    assert not loaded & SECRET_MODULES


# The checks above must be able to fail: run them on sources that break the rules.


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path",
        "from time import monotonic",
        "import asyncio as aio",
        "from urllib.parse import quote",
        "from .. import cli",
    ],
)
def test_scanner_sees_forbidden_imports(source: str) -> None:
    absolute, _ = _imports(ast.parse(source))
    assert absolute & (FORBIDDEN_IMPORTS | {"<outside the core>"})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .kdf import RoomKeys", {"kdf"}),
        ("from . import envelope", {"envelope"}),
        ("from instantroom.protocol.minikey import parse_minikey", {"minikey"}),
        ("from instantroom.protocol import kdf, codes", {"kdf", "codes"}),
    ],
)
def test_scanner_sees_sibling_imports(source: str, expected: set[str]) -> None:
    assert _imports(ast.parse(source))[1] == expected


def test_scanner_sees_file_access() -> None:
    calls = _calls(ast.parse("def f(p):\n    open(p).read()\n    return p.read_text()"))
    assert "open" in calls
    assert "read_text" in calls
