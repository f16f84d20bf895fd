"""`latte` command line: one sub-command per module, each a thin layer over the Python API."""

import argparse
import importlib
import logging
import os
import sys
import warnings

import latte

# Each module defines `register(subparsers)`, adding its sub-command(s) with `set_defaults(run=fn)`.
COMMAND_MODULES = [
    "latte.cli.generate",
    "latte.cli.train",
    "latte.cli.sample",
    "latte.cli.convert",
    "latte.cli.info",
    "latte.cli.evaluate",
    "latte.cli.serve",
]
EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130  # 130 = 128 + SIGINT, what shells report for Ctrl-C

# Set before torch and the Hugging Face libraries load (they read these once); a user's own setting wins.
PROCESS_DEFAULTS = {
    # Busy-waiting OpenMP threads make every run 4-5x slower while any other process uses the CPU.
    "OMP_WAIT_POLICY": "PASSIVE",
}
QUIET_LIBRARIES = {  # their advice and per-file loading bars are noise in a CLI; -v shows them
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latte", description="Latte video diffusion: generate, sample, train.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, library messages and bars")
    parser.add_argument("--version", action="version", version=f"latte {latte.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line through logging (which tqdm redirects), instead of a two-line block glued onto a progress bar.
    logging.getLogger("latte").warning("warning: %s", message)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = bool({"-v", "--verbose"} & set(argv))
    for key, value in {**PROCESS_DEFAULTS, **({} if verbose else QUIET_LIBRARIES)}.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not args.verbose:
        warnings.showwarning = _show_warning
        import diffusers.utils.logging  # its bars (e.g. "Writing model shards") follow no environment variable

        diffusers.utils.logging.disable_progress_bar()
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            return args.run(args) or 0
    except KeyboardInterrupt:
        # Outputs and checkpoints appear only when complete, so an interrupted command leaves no partial file.
        print(f"latte {args.command}: interrupted (exit {EXIT_INTERRUPTED}); nothing partial was written",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError, OSError, TypeError) as err:
        # Bad input is reported in one line, never as a stack trace.
        print(f"latte {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
