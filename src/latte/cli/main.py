"""`latte` command line: one sub-command per module, each a thin layer over the Python API."""

import argparse
import importlib
import logging
import sys

# Each module defines `register(subparsers)`, adding its sub-command(s) with `set_defaults(run=fn)`.
COMMAND_MODULES = [
    "latte.cli.generate",
    "latte.cli.train",
    "latte.cli.sample",
    "latte.cli.convert",
    "latte.cli.info",
    "latte.cli.evaluate",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latte", description="Latte video diffusion: generate, sample, train.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.run(args) or 0
    except (ValueError, FileNotFoundError, OSError, TypeError) as err:
        # Bad input is reported in one line, never as a stack trace.
        print(f"latte {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
