"""The `trainkit` command line. Each subcommand lives in trainkit.commands.<name> and exposes
`register(subparsers)`; command modules import heavy libraries (torch, ray) inside their handlers so
`trainkit validate` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

import trainkit

# One line per subcommand module; the order is the order of `trainkit --help`.
COMMAND_MODULES = [
    "trainkit.commands.validate",
    "trainkit.commands.crd",
    "trainkit.commands.sweep",
    "trainkit.commands.prepare",
    "trainkit.commands.demo_data",
    "trainkit.commands.run",
    "trainkit.commands.bench",
    "trainkit.commands.eval",
    "trainkit.commands.report",
    "trainkit.commands.logs",
    "trainkit.commands.compare",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainkit", description="Pre-train language models on exact mixtures of datasets."
    )
    parser.add_argument("--version", action="version", version=f"trainkit {trainkit.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        from trainkit.storage import StorageError  # the one storage failure every command may meet

        if not isinstance(e, StorageError):
            raise
        # A command that did not expect it (e.g. a bad TRAINKIT_READ_TIMEOUT): one line naming it, no traceback.
        print(f"trainkit {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
