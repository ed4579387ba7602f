"""Echo Forge command line (DESIGN §5): parses arguments and calls the packages.

Exit codes: 0 ok, 1 program or data error (a message, never a traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Before torch loads: OpenMP threads that wait passively instead of spinning, so a busy
# machine slows a run in proportion instead of stalling it (docs/BENCHMARKS.md, "A busy
# machine"). Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class _Stdout:
    """sys.stdout that, once its reader is gone (`check ... | head -n 1`), sends the rest of
    the output nowhere: the command still runs to its end and exits with its own status."""

    def __init__(self, stream):
        self.stream = stream

    def _guard(self, op, *args):
        try:
            return op(*args)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            return None

    def write(self, text: str):
        return self._guard(self.stream.write, text)

    def flush(self):
        return self._guard(self.stream.flush)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _each_program(paths, failures: list):
    """(path, definitions) of each readable program file; errors printed and counted."""
    from engine_dsl import DslError
    from engine_dsl.files import read_file

    for path in paths:
        try:
            yield path, read_file(path)
        except DslError as e:
            for error in (e, *e.others):  # every error the checker found in the file
                print(error, file=sys.stderr)
            failures.append(path)


def cmd_check(args) -> int:
    failures: list = []
    for path, defs in _each_program(args.files, failures):
        names = ", ".join(d.name for d in defs)
        print(f"{path}: ok ({len(defs)} definition{'s' if len(defs) != 1 else ''}: {names})")
    return EXIT_ERROR if failures else EXIT_OK


def cmd_fmt(args) -> int:
    from engine_dsl import DslError
    from engine_dsl.files import atomic_write, dialect_of, render_exact

    failures: list = []
    for path, defs in _each_program(args.files, failures):
        dialect = args.to or dialect_of(path)
        try:
            text = render_exact(defs, dialect)
        except DslError as e:
            print(e, file=sys.stderr)
            failures.append(path)
            continue
        if not args.write:
            sys.stdout.write(text)
            continue
        # a dialect change writes a sibling file; the source is never clobbered
        target = Path(path)
        if dialect != dialect_of(path):
            target = target.with_suffix(".hy" if dialect == "hy" else ".scm")
        if target.exists() and target.read_bytes() == text.encode("utf-8"):
            continue
        if target != Path(path) and target.exists():
            print(f"error: {target} already exists and differs from the {dialect} form of "
                  f"{path}; not overwritten (move it away, or print without --write)",
                  file=sys.stderr)
            failures.append(path)
            continue
        atomic_write(target, text)
        print(f"wrote {target}", file=sys.stderr)
    return EXIT_ERROR if failures else EXIT_OK


def _user_errors():
    """The exception types that mean bad input (exit 1 with their message)."""
    from engine_dsl import DslError
    from evolution.rundir import RunError
    from evolution.settings import ConfigError
    from neural import CheckpointError, DataError
    from neural.device import DeviceError
    from neural.hf import HFError

    return (DslError, RunError, ConfigError, DataError, CheckpointError, DeviceError, HFError)


def cmd_evolve(args) -> int:
    import torch
    from rich.console import Console

    from evolution.loop import CoEvolution
    from evolution.rundir import RunDir
    from evolution.settings import resolve

    console = Console(stderr=True)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    overrides = {}
    flags = {("run", "generations"): args.generations, ("run", "seed"): args.seed,
             ("run", "mode"): args.mode, ("task", "name"): args.task,
             ("evolution", "population_size"): args.population,
             ("loop", "train_steps"): args.train_steps, ("run", "device"): args.device,
             ("hf", "path"): args.model}
    for (section, key), value in flags.items():
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    if args.resume:  # flags extend the run (e.g. --generations) or are refused
        run = CoEvolution.resume(RunDir(args.resume), console, args.set or [], overrides)
        rundir = run.dir
        console.print(f"resuming {rundir.path} at generation {run.next_generation} of "
                      f"{run.cfg.run.generations}", soft_wrap=True)
    else:
        cfg = resolve(args.config, args.set or [], overrides)
        rundir = RunDir(args.out or _default_out(cfg))
        run = CoEvolution.start(cfg, rundir, console, seed_files=args.seeds,
                                model_from=args.model_from)
        console.print(f"run directory: {rundir.path}  (task {cfg.task.name}, "
                      f"{cfg.run.generations} generations, mode {cfg.run.mode})", soft_wrap=True)

    def show(entry):
        from evolution.report import one_line
        from evolution.views import tuned

        v = entry["valid"]
        c = entry["champion"]
        print(f"gen {entry['generation']:>3}  best {v['champion']:.3f}  greedy {v['greedy']:.3f}"
              f"  cost {c['cost']:.1f}  size {c['size']:>2}  tuned {tuned(entry)}  "
              f"{one_line(c['source'], 60)}", flush=True)

    try:
        report = run.run(on_generation=show)
    except KeyboardInterrupt:
        # soft_wrap: the command is one line to copy, at any terminal width
        console.print(f"interrupted: the last finished generation is checkpointed; continue "
                      f"with: python run_evolution.py evolve --resume {rundir.path}",
                      soft_wrap=True)
        return 130
    finally:
        run.close()
    _print_report(report)
    print(f"run directory: {rundir.path}")
    return EXIT_OK


def cmd_show(args) -> int:
    from evolution.views import show

    print(show(args.dir, top=args.top))
    return EXIT_OK


def cmd_lineage(args) -> int:
    from evolution.views import lineage

    print(lineage(args.dir, args.id))
    return EXIT_OK


def cmd_eval(args) -> int:
    import json

    from evolution.views import evaluate

    print(json.dumps(evaluate(args.program, args.run, args.split, args.name, args.device),
                     indent=2))
    return EXIT_OK


def cmd_compare(args) -> int:
    from evolution.views import compare

    print(compare(args.a, args.b, args.run, args.split, device=args.device))
    return EXIT_OK


def cmd_simplify(args) -> int:
    from dataclasses import replace

    from engine_dsl.files import dialect_of, read_file, render
    from evolution.simplify import simplify

    defs = read_file(args.file)
    print(render([replace(d, body=simplify(d.body)) for d in defs], dialect_of(args.file)),
          end="")
    return EXIT_OK


def cmd_trace(args) -> int:
    from evolution.views import trace

    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError:
        print("error: --prompt is not UTF-8 text", file=sys.stderr)
        return EXIT_ERROR

    print(trace(args.program, args.run, args.prompt, top=args.top,
                max_new_tokens=args.max_new_tokens, name=args.name, device=args.device))
    return EXIT_OK


def cmd_export(args) -> int:
    import json

    from engine_dsl import DslError
    from engine_dsl.export import export, render
    from engine_dsl.files import read_file
    from evolution.views import pick

    engine = args.engine or "hf"
    defs = pick(read_file(args.program), args.name, args.program)
    text = Path(args.program).read_text(encoding="utf-8")
    out = {}
    for d in defs:
        try:
            out[d.name] = export(d, engine, text)
        except DslError as e:
            if len(defs) == 1:
                raise
            raise DslError(f"{e.message} (in '{d.name}'; export one definition with --def "
                           "NAME)", e.filename, e.line, e.col, e.source_line) from None
    if args.format == "json":
        print(json.dumps(out[defs[0].name] if len(defs) == 1 else out, indent=2))
    elif len(defs) == 1:
        print(render(out[defs[0].name], engine))
    else:
        print("\n\n".join(f"# {name}\n{render(s, engine)}" for name, s in out.items()))
    return EXIT_OK


def cmd_report(args) -> int:
    from evolution.page import write_page

    print(write_page(args.dir, args.device))
    return EXIT_OK


def cmd_config(args) -> int:
    from evolution.views import config_listing

    print(config_listing())
    return EXIT_OK


def _default_out(cfg) -> str:
    base = Path("runs") / f"{cfg.task.name.replace(':', '-').replace('/', '_')}-seed{cfg.run.seed}"
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return str(out)


def _print_report(report: dict) -> None:
    print(f"final report ({report['task']}, champion: {report['champion_source']})")
    print(f"  {'program':<32} {'valid':>22} {'test':>22}")
    for name, splits in report["programs"].items():
        cells = []
        for split in ("valid", "test"):
            r = splits[split]
            cells.append(f"{r['score']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")
        print(f"  {name:<32} {cells[0]:>22} {cells[1]:>22}")
    from evolution.views import report_lines

    for line in report_lines(report):
        print(line)


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {value}")
    return value


def _model_spec(text: str) -> str:
    """argparse type of --model: `gpt` (the built-in model: "") or `hf:DIR` (DIR, absolute,
    so the run finds it from anywhere)."""
    if text == "gpt":
        return ""
    if text.startswith("hf:") and len(text) > 3:
        return os.path.abspath(text[3:])
    raise argparse.ArgumentTypeError(f"expected gpt or hf:DIR (a local Hugging Face model "
                                     f"directory), found '{text}'")


def _device_flag(p) -> None:
    p.add_argument("--device", metavar="DEVICE",
                   help="cpu | cuda | cuda:N | auto (cuda when there is one); default: the "
                        "run's own (evolve: cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_evolution.py",
        description="Co-evolve a small transformer and the Lisp program that decodes it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("evolve", help="run co-evolution (the default command)")
    p.add_argument("--out", metavar="DIR", help="new run directory (default: runs/TASK-seedK)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    p.add_argument("--task", help="addition | reverse | sort | copy | shakespeare | "
                                  "jsonl:PATH | text:PATH")
    p.add_argument("--generations", type=int, metavar="N")
    p.add_argument("--population", type=int, metavar="P")
    p.add_argument("--train-steps", type=int, metavar="S", help="model steps per generation")
    p.add_argument("--seed", type=int, metavar="K")
    p.add_argument("--mode", choices=("hybrid", "phase1", "phased"))
    p.add_argument("--config", metavar="FILE", help="TOML configuration")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config value, e.g. --set evolution.cxpb=0.6")
    p.add_argument("--seeds", nargs="+", metavar="FILE", help="seed program files")
    p.add_argument("--model-from", metavar="DIR", help="start from the model of run DIR")
    p.add_argument("--model", type=_model_spec, metavar="SPEC",
                   help="gpt (the built-in model, default) or hf:DIR, a local Hugging Face "
                        "causal LM (frozen by default: --set hf.train_mode=full|lora)")
    _device_flag(p)
    p.set_defaults(func=cmd_evolve)

    p = sub.add_parser("show", help="summary and hall of fame of a run")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--top", type=_positive, default=5, help="hall-of-fame programs to list")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("lineage", help="ancestry of an individual (default: the champion)")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("id", nargs="?", metavar="ID")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("eval", help="score a program file on a run's task (JSON on stdout)")
    p.add_argument("program", metavar="PROGRAM")
    p.add_argument("--run", required=True, metavar="DIR")
    p.add_argument("--split", choices=("valid", "test"), default="valid")
    p.add_argument("--def", dest="name", metavar="NAME", help="only this definition")
    _device_flag(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="two programs on the same prompts and draws: the "
                                       "paired difference and where they differ")
    p.add_argument("a", metavar="A", help="program file, or FILE:NAME for one definition")
    p.add_argument("b", metavar="B", help="program file, or FILE:NAME")
    p.add_argument("--run", required=True, metavar="DIR")
    p.add_argument("--split", choices=("valid", "test"), default="valid")
    _device_flag(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("simplify", help="print a program file simplified (same exact-mode "
                                        "behaviour)")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_simplify)

    p = sub.add_parser("trace", help="step-by-step view of a program decoding one prompt")
    p.add_argument("program", metavar="PROGRAM")
    p.add_argument("--run", required=True, metavar="DIR")
    p.add_argument("--prompt", required=True, metavar="TEXT")
    p.add_argument("--top", type=_positive, default=5, help="tokens shown per distribution")
    p.add_argument("--max-new-tokens", type=_positive, metavar="N")
    p.add_argument("--def", dest="name", metavar="NAME",
                   help="the definition to trace (needed when the file holds several)")
    _device_flag(p)
    p.set_defaults(func=cmd_trace)

    from engine_dsl.export import ENGINES

    p = sub.add_parser("export", help="a program as an engine's sampling settings "
                                      "(exactly, or exit 1 naming what the engine lacks)")
    p.add_argument("program", metavar="PROGRAM")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", dest="engine", choices=list(ENGINES),
                    help="; ".join(f"{k}: {e.title}" for k, e in ENGINES.items()))
    to.add_argument("--hf", dest="engine", action="store_const", const="hf",
                    help="same as --to hf")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text: as the engine reads it (flags, Modelfile lines, JSON); "
                        "json: the settings as one JSON object, for scripts")
    p.add_argument("--def", dest="name", metavar="NAME", help="only this definition")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="write DIR/report.html: one self-contained page of "
                                      "the run")
    p.add_argument("dir", metavar="DIR")
    _device_flag(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("config", help="every setting: its default and what it means")
    p.set_defaults(func=cmd_config)

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
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["evolve", *argv]  # evolve is the default command
    args = parser.parse_args(argv)
    for flag in ("out", "resume", "config", "model_from"):  # "" is no path, not the default
        if getattr(args, flag, None) == "":
            parser.error(f"--{flag.replace('_', '-')}: expected a path, found ''")
    if args.command == "evolve" and args.resume and (args.out or args.seeds or args.model_from
                                                      or args.config):
        parser.error("--resume continues a run as configured; it takes no --out, --seeds, "
                     "--model-from or --config")
    stdout, sys.stdout = sys.stdout, _Stdout(sys.stdout)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"error: {e}" if "error:" not in str(e) else e, file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:  # the file system refused: name the file and the reason
        where = f"{e.filename}: " if e.filename is not None else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # never a traceback to a user
        if os.environ.get("ECHO_FORGE_DEBUG"):
            raise
        print(f"error: internal error: {type(e).__name__}: {e} "
              "(set ECHO_FORGE_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR
    finally:
        sys.stdout = stdout

if __name__ == "__main__":
    sys.exit(main())
