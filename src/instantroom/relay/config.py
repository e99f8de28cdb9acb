"""The relay's settings: every option is a flag and an INSTANTROOM_* environment variable."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from instantroom.protocol.codes import NONCE_SIZE, PADDING_BUCKETS, TAG_SIZE, UPTIME_SAID_FOR
from instantroom.protocol.frames import MAX_FRAME_SIZE, PUBLISH_HEADER_SIZE


class ConfigError(Exception):
    """The relay's settings do not fit together."""


@dataclass(frozen=True)
class RelayConfig:
    """Defaults fit a public relay on a small machine. Times are seconds."""

    host: str = field(default="0.0.0.0", metadata={"help": "address to listen on"})  # noqa: S104
    port: int = field(default=8080, metadata={"help": "TCP port (0 picks a free one)"})
    max_frame_size: int = field(
        default=MAX_FRAME_SIZE,
        metadata={"help": "largest frame accepted, in bytes; larger closes 1009"},
    )
    messages_per_second: float = field(
        default=50.0,
        metadata={
            "help": "frames per second per connection (token bucket rate); also JOINs per "
            "second from one client address, all its connections together"
        },
    )
    message_burst: int = field(
        default=200,
        metadata={
            "help": "frames a connection may send at once (bucket size); also JOINs from "
            "one client address at once"
        },
    )
    max_refusals: int = field(
        default=500,
        metadata={
            "help": "refused frames in a row, or within a second, before a connection is closed"
        },
    )
    connections_per_address: int = field(
        default=64, metadata={"help": "open connections from one client address"}
    )
    max_connections: int = field(
        default=0,
        metadata={
            "help": "open connections in all; 0: as many as the process may open files, "
            "less 64 for its own (the relay raises its soft limit to the hard one at start)"
        },
    )
    rooms_per_connection: int = field(default=32, metadata={"help": "rooms one connection joins"})
    members_per_room: int = field(default=256, metadata={"help": "members of one room"})
    handshake_timeout: float = field(
        default=10.0, metadata={"help": "time to finish the WebSocket handshake and join a room"}
    )
    ping_interval: float = field(default=20.0, metadata={"help": "ping a quiet connection after"})
    idle_timeout: float = field(
        default=60.0, metadata={"help": "close a connection that sent nothing for this long"}
    )
    send_buffer: int = field(
        default=1_048_576,
        metadata={"help": "bytes queued to a reader before it is cut off as too slow"},
    )
    max_room_lifetime: float = field(
        default=31 * 24 * 3600.0,
        metadata={"help": "longest room lifetime accepted, in seconds"},
    )
    max_rooms: int = field(
        default=100_000,
        metadata={"help": "rooms remembered at once (live expiries and expired ids)"},
    )
    max_rooms_per_address: int = field(
        default=1_000,
        metadata={"help": "live rooms with an expiry one client address may make"},
    )
    origins: str = field(
        default="",
        metadata={"help": "comma-separated browser origins allowed besides the relay's own"},
    )
    tls_cert: str = field(default="", metadata={"help": "PEM certificate chain: serve TLS"})
    tls_key: str = field(default="", metadata={"help": "PEM private key for --tls-cert"})
    tls_self_signed: bool = field(
        default=False,
        metadata={
            "help": "serve TLS with a certificate made in memory at start (30 days, for "
            "localhost, 127.0.0.1, ::1 and this hostname; loaded from an in-memory file, or "
            "where none can be made from a private temporary one for an instant) and log its "
            "SHA-256 fingerprint. For a LAN: browsers warn, so users check that the "
            "fingerprint their phone shows equals the logged one before going on; "
            "installing the web client as an app and starting it offline need a "
            "trusted certificate (--tls-cert or a proxy) or localhost. Not with --tls-cert"
        },
    )
    log_ids: bool = field(
        default=False, metadata={"help": "log room ids and client addresses (off: privacy)"}
    )
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    trust_proxy: bool = field(
        default=False,
        metadata={"help": "take the client address from X-Forwarded-For (behind a proxy)"},
    )
    metrics_token_file: str = field(
        default="",
        metadata={
            "help": "file holding a token (16 to 256 visible ASCII characters): /metrics "
            "then answers only a request with 'Authorization: Bearer <token>' (default: "
            "anyone)"
        },
    )
    backplane: str = field(
        default="",
        metadata={"help": "redis://HOST:PORT/DB to share rooms with other relays (default: none)"},
    )
    workers: int = field(
        default=1,
        metadata={"help": "relay processes sharing the port (more than 1 needs --backplane)"},
    )
    shutdown_grace: float = field(
        default=3.0, metadata={"help": "seconds to let members hear the shutdown"}
    )
    say_uptime_for: float = field(
        default=UPTIME_SAID_FOR,
        metadata={
            "help": "seconds after it starts that the relay tells clients how long ago it "
            "started, so that they hold what they send for members still reconnecting "
            "after a restart; 0: never"
        },
    )

    def __post_init__(self) -> None:
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            # Written so that NaN fails too.
            if not (low <= value <= high):
                flag = "--" + name.replace("_", "-")
                upper = "" if high == math.inf else f" and at most {_said(high)}"
                raise ConfigError(f"{flag} is {value!r}: it must be at least {_said(low)}{upper}.")
        if self.tls_key and not self.tls_cert and not self.tls_self_signed:
            # Else it served plain HTTP without a word, to an operator who asked for TLS.
            # (With --tls-self-signed, check_tls_options says to leave --tls-key out.)
            raise ConfigError("--tls-key needs --tls-cert, the certificate it is the key of.")

    @property
    def origin_list(self) -> list[str]:
        return [o.strip() for o in self.origins.split(",") if o.strip()]


# The smallest frame setting that still carries the smallest message.
_SMALLEST_FRAME = PUBLISH_HEADER_SIZE + 1 + NONCE_SIZE + PADDING_BUCKETS[0] + TAG_SIZE
_NEVER = 10**9  # seconds: some 30 years, and a time every timer takes
# Each number's range: outside it the relay would refuse everyone (0 members a room), time
# out at once (a negative timeout), or fail later and obscurely (a port of 70000 wraps).
_RANGES: dict[str, tuple[float, float]] = {
    "port": (0, 65535),
    # Above the protocol's largest frame, the relay answers FRAME_TOO_LARGE itself; a
    # MiB is room for that, and not a read buffer an attacker may make a gigabyte.
    "max_frame_size": (_SMALLEST_FRAME, 1 << 20),
    "messages_per_second": (1e-3, math.inf),
    "message_burst": (1, math.inf),
    "max_refusals": (1, math.inf),
    "connections_per_address": (1, math.inf),
    "max_connections": (0, math.inf),
    "rooms_per_connection": (1, math.inf),
    "members_per_room": (1, 0xFFFF_FFFF),
    "handshake_timeout": (0.01, _NEVER),
    "ping_interval": (0.01, _NEVER),
    "idle_timeout": (0.01, _NEVER),
    "send_buffer": (_SMALLEST_FRAME, math.inf),
    "max_room_lifetime": (1, _NEVER),
    "max_rooms": (1, math.inf),
    "max_rooms_per_address": (1, math.inf),
    "workers": (1, 1024),
    "shutdown_grace": (0, _NEVER),
    "say_uptime_for": (0, 3600),
}


def _said(number: float) -> str:
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


_TOKEN_SIZES = range(16, 257)


def read_metrics_token(config: RelayConfig) -> bytes | None:
    """The token ``--metrics-token-file`` holds (one line; the line break dropped), or None
    without one. ConfigError names the file, never what it holds."""
    if not config.metrics_token_file:
        return None
    named = f"--metrics-token-file {config.metrics_token_file}"
    try:
        with open(config.metrics_token_file, "rb") as file:
            raw = file.read(1024)
    except OSError as exc:
        raise ConfigError(f"{named}: cannot read it ({exc.strerror}).") from None
    token = raw.removesuffix(b"\n").removesuffix(b"\r")
    if len(token) not in _TOKEN_SIZES or not all(0x21 <= byte <= 0x7E for byte in token):
        raise ConfigError(
            f"{named}: a token is one line of {_TOKEN_SIZES.start} to {_TOKEN_SIZES.stop - 1} "
            "visible ASCII characters, with no space (openssl rand -hex 32 makes one)."
        )
    return token


def env_name(name: str) -> str:
    return "INSTANTROOM_" + name.upper()


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")


def _parse_level(text: str) -> str:
    level = text.strip().lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"not a log level: {text!r}")
    return level


class _FromEnvironment(str):
    """An INSTANTROOM_* variable's text as its option's default. argparse parses a text
    default only when its command runs: a bad one stops ``serve`` with a usage error that
    names the variable, and no other command (``join``, ``--help``) trips on it."""

    variable = ""


def _option_type(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def read(text: str) -> Any:
        if not isinstance(text, _FromEnvironment):
            return parse(text)  # a flag's value: argparse says "invalid <name> value"
        try:
            return parse(text)
        except ValueError:
            message = f"{text.variable}={str(text)!r} is not a valid {name}"
            raise argparse.ArgumentTypeError(message) from None

    read.__name__ = name
    return read


def add_relay_options(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; each defaults to its environment variable, then the default.

    A variable that is empty counts as unset (a compose file may list one with no value):
    an empty INSTANTROOM_HOST had listened on every address, IPv6 ones too.
    """
    defaults = RelayConfig()
    for spec in fields(RelayConfig):
        flag = "--" + spec.name.replace("_", "-")
        default: Any = getattr(defaults, spec.name)
        env = env_name(spec.name)
        raw = os.environ.get(env)
        help_text = f"{spec.metadata['help']} [env {env}; default {default!r}]"
        kind = type(default)
        value: Any = default
        if raw is not None and raw.strip():
            value = _FromEnvironment(raw)
            value.variable = env
        if isinstance(default, bool):
            action = parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=value, help=help_text
            )
            action.type = _option_type(_parse_bool, "yes/no value")  # the text default's
        elif spec.name == "log_level":
            parser.add_argument(
                flag, type=_option_type(_parse_level, "log level"), default=value, help=help_text
            )
        else:
            parser.add_argument(
                flag, type=_option_type(kind, kind.__name__), default=value, help=help_text
            )


def config_from_args(args: argparse.Namespace) -> RelayConfig:
    return RelayConfig(**{spec.name: getattr(args, spec.name) for spec in fields(RelayConfig)})
