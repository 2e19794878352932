"""Argument types shared by the `studio` commands: a bad value is refused by argparse in one line,
and with --json as a JSON error object on stdout."""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import sys
from collections.abc import Callable
from typing import NoReturn

HIGHEST_PORT = 65535


class CommandLineRefused(Exception):
    """argparse refused the command line; main() reports it as text or, with --json, as JSON."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser, self.message = parser, message

    def report(self, as_json: bool) -> NoReturn:
        """argparse's usage and `prog: error: message` on stderr, or the JSON error object on stdout; exit 2."""
        if as_json:
            print(json.dumps({"ok": False, "error": f"{self.parser.prog}: {self.message}"}))
        else:
            self.parser.print_usage(sys.stderr)
            print(f"{self.parser.prog}: error: {self.message}", file=sys.stderr)
        sys.exit(2)


class StudioParser(argparse.ArgumentParser):
    """An ArgumentParser (its subcommands' parsers are of its class too) that leaves reporting a refusal to main()."""

    def error(self, message: str) -> NoReturn:
        raise CommandLineRefused(self, message)


def whole_number(minimum: int, zero_means: str = "") -> Callable[[str], int]:
    """An int of at least MINIMUM; ZERO_MEANS says what 0 stands for, where 0 is a default."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            meaning = f" (0 means {zero_means})" if zero_means else ""
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}{meaning}")
        return value

    return parse


def finite_number(text: str) -> float:
    """A float that is a number: nan and inf are refused (every comparison with nan is false)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 1..65535."""
    value = whole_number(1)(text)
    if value > HIGHEST_PORT:
        raise argparse.ArgumentTypeError(f"a port is 1..{HIGHEST_PORT}, got {value}")
    return value


def host_and_port(text: str) -> str:
    """HOST:PORT (an IPv6 host in brackets: [::1]:50051), returned as given."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:50051)")
    try:
        port_number(port)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return text


def port_of(endpoint: str) -> int:
    """The port of a HOST:PORT that host_and_port accepted."""
    return int(endpoint.rpartition(":")[2])


def is_loopback(endpoint: str) -> bool:
    """Whether a HOST:PORT that host_and_port accepted names this machine (127.0.0.0/8, ::1, localhost)."""
    host = endpoint.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
