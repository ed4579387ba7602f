"""Quality of the default run, over several run seeds: what programs and co-training add.

    python bench/quality.py                          # 3 seeds x {lambda 0.1, 0}
    python bench/quality.py --seeds 0 1 --set run.generations=2 --write

Per run seed, two real `run_evolution.py evolve` runs (in a temporary directory unless
--keep): co-training (`--cotrain-lambda`, default 0.1, with the run's `loop.program_guard`)
and plain training (lambda 0, the answer tasks' default), the same training steps,
population and generations (the guard adds its plain reference branch). Then:

1. **The runs**: test exact match of champion, greedy and the best seed (by valid), 95%
   bootstrap intervals, and the run's own `champion vs greedy on test` paired interval.
2. **Co-training vs plain training** (the safeguard): greedy test exact match of the
   co-trained model minus that of the plain one, paired over the same test prompts.
3. **The seeds' claim**: champion + co-training vs greedy + plain training: relative gain in
   test exact match, sum over seeds and prompts, 95% bootstrap interval (stratified by seed).
4. **Self-consistency curve**: `(vote n (sample (temperature logits t)))` for n = 1, 2, 4, 8,
   16 at the evolved temperature t (the champion's, else the hall of fame's first program
   with one), each minus greedy on test, paired, on the default (plain) run's model.
5. **Champion vs an Optuna-tuned sampler chain** `(vote n (sample (top-p (top-k
   (temperature logits t) k) p)))`: t, k, p, n tuned by Optuna's TPE on the run's valid
   prompts and draws with as many evaluations as evolution scored programs (population x (1
   + 2 x generations)), the first trial the self-consistency seed (t 0.7, k the vocabulary
   and p 1: no cut, n 16), then chosen on the champion's footing (`tuned.select_tuned`: as
   many of its best trials as the final selection had evolved programs, and greedy, on the
   run's fresh valid prompts and draws, the one-standard-error rule), then champion minus
   the chosen chain on test, paired (the default run's).

`--write` replaces the "## Quality" section of docs/BENCHMARKS.md. Needs `optuna` (the
`bench` extra) for part 5.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VOTES = (1, 2, 4, 8, 16)


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
    if not (out / "report.json").exists():
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
            "champion_source": report["champion_source"],
            "vs_greedy": report["champion_vs_greedy"], "selection": report["selection"]}


def cell(r: dict) -> str:
    return f"{r['score']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"


def interval(d: dict) -> str:
    return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def paired(a: list[float], b: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of a - b over the same items with a 95% percentile bootstrap interval."""
    from evolution.report import bootstrap_ci

    m, lo, hi = bootstrap_ci([x - y for x, y in zip(a, b, strict=True)], resamples, seed=seed)
    return {"diff": m, "low": lo, "high": hi}


def relative_gain(pairs: list[tuple[list[float], list[float]]], resamples: int = 2000,
                  seed: int = 0) -> dict:
    """sum(a) / sum(b) - 1 over every seed's items, with a 95% bootstrap interval that
    resamples the items within each seed (pairs: per seed, (a items, b items))."""
    rng = random.Random(seed)

    def gain(groups):
        num = sum(sum(a) for a, _ in groups)
        den = sum(sum(b) for _, b in groups)
        return num / den - 1 if den else float("nan")

    stats = []
    for _ in range(resamples):
        groups = []
        for a, b in pairs:
            idx = [rng.randrange(len(a)) for _ in a]
            groups.append(([a[i] for i in idx], [b[i] for i in idx]))
        stats.append(gain(groups))
    stats = sorted(x for x in stats if x == x)  # a resample without a correct answer: none
    if not stats:
        return {"diff": gain(pairs), "low": float("nan"), "high": float("nan")}
    n = len(stats) - 1
    return {"diff": gain(pairs), "low": stats[math.floor(0.025 * n)],
            "high": stats[math.ceil(0.975 * n)]}


def evolved_temperature(run) -> float:
    """The temperature of the champion, else of the first hall-of-fame program with one
    (1.0 where none has)."""
    from engine_dsl import Apply, RealConst, Type, read_expr, walk
    from engine_dsl.files import read_file

    bodies = [read_expr(json.loads(run.dir.report.read_text())["champion_source"],
                        Type.DECODER)]
    bodies += [d.body for d in read_file(run.dir.hall_of_fame)]
    for body in bodies:
        for node in walk(body):
            if isinstance(node, Apply) and node.op == "temperature" \
                    and isinstance(node.args[1], RealConst):
                return node.args[1].value
    return 1.0


def self_consistency(run, t: float) -> dict:
    """Test exact match of vote n at temperature t minus greedy's, paired, per n."""
    from engine_dsl import Type, read_expr
    from evolution.loop import GREEDY

    exprs = [GREEDY] + [read_expr(f"(vote {n} (sample (temperature logits {t!r})))",
                                  Type.DECODER) for n in VOTES]
    scores, _, _ = run.per_item("test", exprs)
    greedy = scores[0]
    return {n: {**paired(s, greedy), "score": sum(s) / len(s)}
            for n, s in zip(VOTES, scores[1:], strict=True)}


def chain(t: float, k: int, p: float, n: int, vocab: int) -> str:
    """`(vote n (sample (top-p (top-k (temperature logits t) k) p)))`, without the cuts
    that cut nothing (k >= the vocabulary, p >= 1: the program is then exactly the one
    without them, which the top-p primitive's open domain could not otherwise write)."""
    logits = f"(temperature logits {t!r})"
    if k < vocab:
        logits = f"(top-k {logits} {k})"
    if p < 1.0:
        logits = f"(top-p {logits} {p!r})"
    return f"(vote {n} (sample {logits}))"


def optuna_chain(run, trials: int, seed: int):
    """The sampler chain tuned by Optuna's TPE on the run's valid prompts and draws, one
    program scored at a time, its first trial the self-consistency seed (t 0.7, no cut, 16
    votes; `tuned.tpe_ranked`). Returns the distinct chains tried, best valid score first,
    with their scores."""
    from bench.tuned import tpe_ranked
    from engine_dsl import Type, read_expr

    cap, vocab = run.cfg.evolution.limits.max_votes, run.model.vocab_size

    def propose(trial) -> str:
        return chain(trial.suggest_float("t", 0.05, 2.0, log=True),
                     trial.suggest_int("k", 1, vocab, log=True),
                     trial.suggest_float("p", 0.05, 1.0), trial.suggest_int("n", 1, cap),
                     vocab)

    def score(sources):
        scores, _, _ = run.per_item("valid", [read_expr(s, Type.DECODER) for s in sources])
        return [sum(s) / len(s) for s in scores]

    return tpe_ranked(propose, score, trials, 1, seed,
                      {"t": 0.7, "k": vocab, "p": 1.0, "n": min(16, cap)})


def analyse(co_dir: Path, plain_dir: Path, seed: int, trials: int | None) -> dict:
    """Parts 2, 4 and 5 on one seed's pair of runs."""
    from bench.tuned import select_tuned
    from engine_dsl import Type, read_expr
    from evolution.loop import CoEvolution
    from evolution.rundir import RunDir
    from evolution.views import open_run

    co, plain = open_run(str(co_dir)), open_run(str(plain_dir))
    rep_co = json.loads((co_dir / "report.json").read_text())
    rep_plain = json.loads((plain_dir / "report.json").read_text())
    champion = read_expr(rep_plain["champion_source"], Type.DECODER)  # the default run's
    out = {"seed": seed,
           "claim_items": (rep_co["test_per_prompt"]["champion"],
                           rep_plain["test_per_prompt"]["greedy"]),
           "greedy_co_minus_plain": paired(rep_co["test_per_prompt"]["greedy"],
                                           rep_plain["test_per_prompt"]["greedy"]),
           "greedy_co": rep_co["programs"]["greedy"]["test"]["score"],
           "greedy_plain": rep_plain["programs"]["greedy"]["test"]["score"]}
    out["heldout_loss"] = {name: held_out_loss(r) for name, r in (("co", co), ("plain", plain))}
    t = evolved_temperature(plain)
    out["temperature"] = t
    out["curve"] = self_consistency(plain, t)
    if trials:
        cfg = plain.cfg
        trials = trials if trials > 0 else cfg.evolution.population_size * (
            1 + 2 * cfg.run.generations)
        t0 = time.perf_counter()
        ranked = optuna_chain(plain, trials, seed)
        again = CoEvolution.resume(RunDir(plain_dir))  # a view holds no population
        again.close()
        again.model.eval()
        chosen, sel = again.select_champion()  # the run's final choice, made again
        source, fresh, candidates = select_tuned(again, ranked, sel["evolved"])
        chain_expr = read_expr(source, Type.DECODER)
        scores, _, _ = plain.per_item("test", [champion, chain_expr])
        out["optuna"] = {"trials": trials, "best": _source(read_expr(ranked[0][0],
                                                                     Type.DECODER)),
                         "best_valid": ranked[0][1], "chain": _source(chain_expr),
                         "candidates": candidates, "fresh": fresh,
                         "champion_fresh": sel["valid"],
                         "champion_again": _source(chosen) == _source(champion),
                         "test": sum(scores[1]) / len(scores[1]),
                         "champion_test": sum(scores[0]) / len(scores[0]),
                         "champion_minus_chain": paired(scores[0], scores[1]),
                         "seconds": time.perf_counter() - t0}
    return out


def held_out_loss(run) -> float:
    """Plain per-token answer loss (nats) of the run's model on its test prompts."""
    import torch

    from neural.tasks import make_batch

    examples = run._examples("test")
    batch = make_batch(run.tokenizer, examples, run.model.config.block_size)
    with torch.no_grad():
        _, loss = run.model(batch.inputs, batch.targets(answer_only=True))
    return float(loss)


def _source(expr) -> str:
    """A program on one line, its constants rounded as a run writes them."""
    from evolution.report import one_line, readable

    return one_line(readable(expr), 200)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--keep", metavar="DIR", help="keep the runs under DIR (finished runs "
                                                   "there are reused)")
    ap.add_argument("--trials", type=int, default=-1,
                    help="Optuna trials (-1: as many as evolution scored programs; 0: skip)")
    ap.add_argument("--cotrain-lambda", type=float, default=0.1,
                    help="loop.program_lambda of the co-training runs (> 0; default 0.1)")
    ap.add_argument("--write", action="store_true", help="write docs/BENCHMARKS.md section")
    args = ap.parse_args(argv)

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="quality-"))
    if not args.cotrain_lambda > 0:
        ap.error("--cotrain-lambda must be above 0 (the plain runs are the lambda-0 ones)")
    default_lambda = args.cotrain_lambda
    rows, analyses = [], []
    for seed in args.seeds:
        dirs = {}
        for lam in (default_lambda, 0.0):
            out = base / f"seed{seed}-lambda{lam}"
            report, secs = run_one(out, seed, lam, args.config, args.set)
            s = summarize(report)
            rows.append((seed, lam, s, secs))
            dirs[lam] = out
            print(f"seed {seed} lambda {lam}: champion {cell(s['champion'])}  greedy "
                  f"{cell(s['greedy'])}  vs greedy {interval(s['vs_greedy'])}  [{secs:.0f} s]"
                  f"  {s['champion_source']}", flush=True)
        a = analyse(dirs[default_lambda], dirs[0.0], seed, args.trials or None)
        analyses.append(a)
        print(json.dumps({k: v for k, v in a.items() if k != "claim_items"}), flush=True)

    text = report_text(rows, analyses, default_lambda)
    print(text)
    if args.write:
        command = "python bench/quality.py " + " ".join(shlex.quote(a) for a in
                                                        (argv or sys.argv[1:]))
        load = os.getloadavg()
        section = (f"## Quality\n\nCommand: `{command.strip()}` (load average at the end "
                   f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on 2 cores: a shared "
                   f"machine)\n\n{text}\n")
        write_section(ROOT / "docs" / "BENCHMARKS.md", "## Quality", section)
    return 0


def report_text(rows, analyses, default_lambda) -> str:
    lines = ["Test-split exact match (95% bootstrap interval over the test prompts) of the "
             "final champion, greedy and the best seed program (chosen on valid), and the "
             "run's paired `champion vs greedy on test`.", "",
             "| run seed | lambda | champion | greedy | best seed (by valid) | champion vs "
             "greedy | valid-to-test gap | wall s | champion |",
             "|---:|---:|---|---|---|---|---:|---:|---|"]
    for seed, lam, s, secs in rows:
        gap = s["selection"].get("gap")
        lines.append(f"| {seed} | {lam} | {cell(s['champion'])} | {cell(s['greedy'])} | "
                     f"{s['best_seed_name']}: {cell(s['best_seed'])} | "
                     f"{interval(s['vs_greedy'])} | "
                     f"{'-' if gap is None else f'{gap:+.3f}'} | {secs:.0f} | "
                     f"`{s['champion_source']}` |")
    for lam, what in ((0.0, "Default runs (lambda 0)"),
                      (default_lambda, f"Co-training runs (lambda {default_lambda})")):
        above = [s["vs_greedy"]["low"] > 0 for seed, la, s, _ in rows if la == lam]
        lines += ["", f"{what} whose champion-vs-greedy interval lies above zero: "
                      f"{sum(above)}/{len(above)}."]
    lines += ["", "Co-training (lambda "
              f"{default_lambda}) vs plain training (lambda 0), same compute: the model's own "
              "greedy test exact match (paired over the same prompts) and its plain held-out "
              "answer loss (nats per token, test prompts):", "",
              "| run seed | greedy co | greedy plain | co - plain | held-out loss co | "
              "held-out loss plain |", "|---:|---:|---:|---|---:|---:|"]
    for a in analyses:
        lines.append(f"| {a['seed']} | {a['greedy_co']:.3f} | {a['greedy_plain']:.3f} | "
                     f"{interval(a['greedy_co_minus_plain'])} | "
                     f"{a['heldout_loss']['co']:.4f} | {a['heldout_loss']['plain']:.4f} |")
    claim = relative_gain([a["claim_items"] for a in analyses])
    figure = (f"**{interval(claim)}**" if claim["diff"] == claim["diff"] else
              "undefined (greedy + plain training answers no test prompt)")
    lines += ["", f"The seeds' claim (>= +10% relative): champion + co-training over greedy + "
                  f"plain training, relative gain in test exact match over "
                  f"{len(analyses)} seeds: {figure}.", "",
              "Self-consistency at the evolved temperature on the default run's model, test "
              "exact match of `(vote n (sample (temperature logits t)))` minus greedy "
              "(paired):", "",
              "| run seed | t | " + " | ".join(f"n = {n}" for n in VOTES) + " |",
              "|---:|---:|" + "---|" * len(VOTES)]
    for a in analyses:
        lines.append(f"| {a['seed']} | {a['temperature']:.3g} | " + " | ".join(
            f"{a['curve'][n]['score']:.3f} ({interval(a['curve'][n])})" for n in VOTES) + " |")
    opt = [a for a in analyses if "optuna" in a]
    if opt:
        lines += ["", "The default run's champion vs a sampler chain tuned by Optuna (TPE) on "
                      "valid with the same number of program evaluations (its first trial the "
                      "self-consistency seed), then chosen as the champion is: its best "
                      "trials and greedy on the run's fresh valid prompts and draws, the "
                      "one-standard-error rule (size):", "",
                  "| run seed | trials | best on valid | chosen chain (of candidates) | "
                  "fresh valid: chain, champion | chain test | champion test | "
                  "champion - chain |", "|---:|---:|---|---|---|---:|---:|---|"]
        for a in opt:
            o = a["optuna"]
            again = "" if o["champion_again"] else " (a different champion chosen again!)"
            lines.append(f"| {a['seed']} | {o['trials']} | `{o['best']}` "
                         f"({o['best_valid']:.3f}) | `{o['chain']}` ({o['candidates']}) | "
                         f"{o['fresh']:.3f}, {o['champion_fresh']:.3f}{again} | "
                         f"{o['test']:.3f} | {o['champion_test']:.3f} | "
                         f"{interval(o['champion_minus_chain'])} |")
        held = [a["optuna"]["champion_minus_chain"]["diff"] >= 0 for a in opt]
        lines += ["", f"Champion >= the chosen chain on test (point estimate): "
                      f"{sum(held)}/{len(held)} seeds."]
    return "\n".join(lines)


def write_section(path: Path, heading: str, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
