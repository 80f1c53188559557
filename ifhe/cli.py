"""The `ifhe` command. User mistakes print one line and exit with code 2; nothing prints a traceback.

Each subcommand is a module of `ifhe.commands` (its arguments and its command function together); this module
builds the parser from them and runs the chosen one.
"""
from __future__ import annotations

import argparse
import sys

from .commands import COMMANDS
from .errors import IfheError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        self.exit(2, f"ifhe: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ifhe", description="Data-free knowledge distillation by model inversion (IFHE and baselines)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]
    try:
        return args.func(args)
    except IfheError as e:
        print(f"ifhe: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable or full output folder, vanished files: the OS names the path
        where = f"{e.filename}: " if e.filename else ""
        print(f"ifhe: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ifhe: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
