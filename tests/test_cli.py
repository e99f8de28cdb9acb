"""The key commands, in process and once as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from instantroom import __version__
from instantroom.cli import main
from instantroom.protocol.minikey import format_minikey, parse_minikey

from .protocol.corpus import PROTOCOL

DERIVATION: dict[str, Any] = PROTOCOL["derivations"][0]
KEY: str = DERIVATION["minikey"]
TYPO = KEY[:-1] + "z"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_key_new_prints_one_valid_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "key", "new")
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1
    assert parse_minikey(lines[0]) == lines[0]
    _, again, _ = _run(capsys, "key", "new")
    assert again != out


@pytest.mark.parametrize("text", [KEY, format_minikey(KEY), f"  {format_minikey(KEY)} "])
def test_key_check_accepts_a_valid_key(capsys: pytest.CaptureFixture[str], text: str) -> None:
    code, out, err = _run(capsys, "key", "check", text)
    assert code == 0
    assert "well-formed" in out
    assert err == ""


@pytest.mark.parametrize(
    ("text", "said"),
    [
        pytest.param(TYPO, ["typo"], id="checksum"),
        pytest.param(KEY[:-1], ["30 characters", "29"], id="too-short"),
        pytest.param(KEY + "y", ["30 characters", "31"], id="too-long"),
        pytest.param("S0" + KEY[2:], ["Character 2", "'0'"], id="bad-character"),
        pytest.param("T" + KEY[1:], ["capital S"], id="prefix"),
    ],
)
def test_key_check_says_what_is_wrong(
    capsys: pytest.CaptureFixture[str], text: str, said: list[str]
) -> None:
    code, out, err = _run(capsys, "key", "check", text)
    assert code != 0
    assert out == ""
    for words in said:
        assert words in err
    assert text not in err
    assert text not in out


def test_key_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "key", "show", KEY)
    assert code == 0
    assert err == ""
    assert DERIVATION["grouped"] in out.splitlines()
    for line in DERIVATION["spelled"]:
        assert line in out
    assert f"room id: {DERIVATION['room_id']}" in out
    assert DERIVATION["message_key"] not in out
    assert DERIVATION["root_secret"] not in out


def test_key_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "key", "show", "--json", format_minikey(KEY).replace(" ", "-"))
    assert code == 0
    assert err == ""
    assert json.loads(out) == {
        "key": DERIVATION["minikey"],
        "grouped": DERIVATION["grouped"],
        "spelled": DERIVATION["spelled"],
        "room_id": DERIVATION["room_id"],
    }


def test_key_show_refuses_a_bad_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "key", "show", TYPO)
    assert code != 0
    assert out == ""
    assert "typo" in err


@pytest.mark.parametrize(
    "argv", [[], ["key"], ["key", "check"], ["key", "show"], ["nonsense"]], ids=repr
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["listen", KEY],  # as `join KEY` takes it
        [KEY],
        ["send", "--key", KEY, "a secret", "said twice"],
        ["send", "--key", KEY, "--timeout", KEY, "hello"],
        ["new", "--expires", format_minikey(KEY)],
    ],
    ids=["listen KEY", "KEY", "message words", "--timeout KEY", "--expires KEY"],
)
def test_a_usage_error_quotes_no_key_or_message_given_in_the_wrong_place(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    # Standard error goes to logs (cron mail, journald, CI): the whole key, or the
    # message, had been quoted back there.
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    assert "not shown" in err
    for secret in (KEY, format_minikey(KEY), "a secret", "said twice"):
        assert secret not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"instantroom {__version__}"


def _process(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "instantroom", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_as_a_process() -> None:
    made = _process("key", "new")
    assert made.returncode == 0
    key = made.stdout.strip()
    assert parse_minikey(key) == key

    shown = _process("key", "show", "--json", KEY)
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["room_id"] == DERIVATION["room_id"]

    typo = _process("key", "check", TYPO)
    assert typo.returncode == 1
    assert "typo" in typo.stderr
    assert TYPO not in typo.stderr
