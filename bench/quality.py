"""Quality of the default run: champion vs greedy vs the best seed on the test split, over
several run seeds, and program_lambda > 0 (the loss passes through the champion) vs = 0.

    python bench/quality.py                          # 3 seeds x {lambda default, 0}
    python bench/quality.py --seeds 0 1 --set run.generations=2 --write

Each run is a real `run_evolution.py evolve` run (in a temporary directory unless --keep);
the table gives test-split exact match with 95% bootstrap intervals. `--write` replaces the
"## Quality" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_one(out: Path, seed: int, lam: float | None, config: str | None, sets: list[str]):
    cmd = [sys.executable, str(ROOT / "run_evolution.py"), "evolve", "--out", str(out),
           "--seed", str(seed)]
    if config:
        cmd += ["--config", config]
    for s in sets:
        cmd += ["--set", s]
    if lam is not None:
        cmd += ["--set", f"loop.program_lambda={lam}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    return report, time.perf_counter() - t0


def summarize(report: dict) -> dict:
    progs = report["programs"]
    seeds = {k: v for k, v in progs.items() if k.startswith("seed:")}
    best_seed = max(seeds, key=lambda k: seeds[k]["valid"]["score"])  # chosen on valid
    return {"champion": progs["champion"]["test"], "greedy": progs["greedy"]["test"],
            "best_seed": progs[best_seed]["test"], "best_seed_name": best_seed[5:],
            "champion_source": report["champion_source"]}


def cell(r: dict) -> str:
    return f"{r['score']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--keep", metavar="DIR", help="keep the runs under DIR")
    ap.add_argument("--write", action="store_true", help="write docs/BENCHMARKS.md section")
    args = ap.parse_args(argv)

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="quality-"))
    from evolution.settings import resolve

    default_lambda = resolve(args.config, args.set).loop.program_lambda
    rows = []
    for seed in args.seeds:
        for lam in (default_lambda, 0.0):
            out = base / f"seed{seed}-lambda{lam}"
            report, secs = run_one(out, seed, lam, args.config, args.set)
            s = summarize(report)
            rows.append((seed, lam, s, secs))
            print(f"seed {seed} lambda {lam}: champion {cell(s['champion'])}  greedy "
                  f"{cell(s['greedy'])}  best seed ({s['best_seed_name']}) "
                  f"{cell(s['best_seed'])}  [{secs:.0f} s]  {s['champion_source']}",
                  flush=True)

    lines = ["| run seed | lambda | champion | greedy | best seed (by valid) | wall s | champion |",
             "|---:|---:|---|---|---|---:|---|"]
    for seed, lam, s, secs in rows:
        lines.append(f"| {seed} | {lam} | {cell(s['champion'])} | {cell(s['greedy'])} | "
                     f"{s['best_seed_name']}: {cell(s['best_seed'])} | {secs:.0f} | "
                     f"`{s['champion_source']}` |")
    wins = sum(s["champion"]["score"] > s["greedy"]["score"] for _, _, s, _ in rows)
    ties = sum(s["champion"]["score"] == s["greedy"]["score"] for _, _, s, _ in rows)
    table = "\n".join(lines)
    print(table)
    print(f"champion above greedy in {wins}/{len(rows)} runs, equal in {ties}")
    if args.write:
        command = "python bench/quality.py " + " ".join(shlex.quote(a) for a in
                                                        (argv or sys.argv[1:]))
        section = (f"## Quality\n\nCommand: `{command.strip()}`\n\nTest-split exact match "
                   f"(mean and 95% bootstrap interval over the test prompts) of the final "
                   f"champion, the greedy baseline and the best seed program (chosen on "
                   f"valid), for each run seed, with the run's program_lambda and with 0.\n\n"
                   f"{table}\n\nChampion above greedy in {wins}/{len(rows)} runs, equal in "
                   f"{ties}.\n")
        write_section(ROOT / "docs" / "BENCHMARKS.md", "## Quality", section)
    return 0


def write_section(path: Path, heading: str, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
