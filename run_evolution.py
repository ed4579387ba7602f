"""Echo Forge command line (DESIGN §5): parses arguments and calls the packages.

Exit codes: 0 ok, 1 program or data error (a message, never a traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def cmd_check(args) -> int:
    from engine_dsl import DslError
    from engine_dsl.files import read_file

    failed = 0
    for path in args.files:
        try:
            defs = read_file(path)
        except DslError as e:
            print(e, file=sys.stderr)
            failed += 1
            continue
        names = ", ".join(d.name for d in defs)
        print(f"{path}: ok ({len(defs)} definition{'s' if len(defs) != 1 else ''}: {names})")
    return EXIT_ERROR if failed else EXIT_OK


def cmd_fmt(args) -> int:
    from engine_dsl import DslError
    from engine_dsl.files import atomic_write, dialect_of, read_file, render

    failed = 0
    for path in args.files:
        try:
            defs = read_file(path)
        except DslError as e:
            print(e, file=sys.stderr)
            failed += 1
            continue
        dialect = args.to or dialect_of(path)
        text = render(defs, dialect)
        if not args.write:
            sys.stdout.write(text)
            continue
        # a dialect change writes a sibling file; the source is never clobbered
        target = Path(path)
        if dialect != dialect_of(path):
            target = target.with_suffix(".hy" if dialect == "hy" else ".scm")
        if target.exists() and target.read_bytes() == text.encode("utf-8"):
            continue
        atomic_write(target, text)
        print(f"wrote {target}", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_evolution.py",
        description="Co-evolve a small transformer and the Lisp program that decodes it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check", help="read and type-check program files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("fmt", help="print program files in canonical form")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--write", action="store_true",
                   help="rewrite files in place (with --to of the other dialect: write a "
                        "sibling file with that dialect's extension)")
    p.add_argument("--to", choices=("scheme", "hy"), help="output dialect (default: the file's)")
    p.set_defaults(func=cmd_fmt)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # never a traceback to a user
        if os.environ.get("ECHO_FORGE_DEBUG"):
            raise
        print(f"error: internal error: {type(e).__name__}: {e} "
              "(set ECHO_FORGE_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
