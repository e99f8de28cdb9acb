"""The ``instantroom`` command."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Sequence

from . import __version__
from .protocol.errors import MiniKeyError
from .protocol.kdf import RoomKeys
from .protocol.minikey import format_minikey, make_minikey, parse_minikey, spell_minikey


def _key_new(args: argparse.Namespace) -> int:
    print(make_minikey(secrets.randbelow))
    return 0


def _key_check(args: argparse.Namespace) -> int:
    try:
        parse_minikey(args.key)
    except MiniKeyError as exc:
        print(f"instantroom: {exc}", file=sys.stderr)
        return 1
    print("This room key is well-formed.")
    return 0


def _key_show(args: argparse.Namespace) -> int:
    try:
        key = parse_minikey(args.key)
    except MiniKeyError as exc:
        print(f"instantroom: {exc}", file=sys.stderr)
        return 1
    room_id = RoomKeys.from_minikey(key).room_id.hex()
    if args.json:
        shown = {"key": key, "grouped": format_minikey(key), "spelled": spell_minikey(key)}
        print(json.dumps({**shown, "room_id": room_id}, indent=2))
        return 0
    print(format_minikey(key))
    print()
    for number, line in enumerate(spell_minikey(key), start=1):
        print(f"  {number}. {line}")
    print()
    print(f"room id: {room_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instantroom",
        description="Private group chat: a room key made here, handed over by hand.",
    )
    parser.add_argument("--version", action="version", version=f"instantroom {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    key = commands.add_parser("key", help="make, check and show room keys")
    key_commands = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    key_commands.add_parser("new", help="print a fresh room key").set_defaults(run=_key_new)
    check = key_commands.add_parser("check", help="exit 0 if KEY is well-formed, else say why")
    check.add_argument("key", metavar="KEY")
    check.set_defaults(run=_key_check)
    show = key_commands.add_parser("show", help="show KEY grouped, spelled out, and its room id")
    show.add_argument("key", metavar="KEY")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(run=_key_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
