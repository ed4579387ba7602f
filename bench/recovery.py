"""Benchmark: can evolution recover the program that generated a data set?

For each teacher program file in --teachers: decode a fixed small trained model with the
teacher on held-out text prompts (`engine_dsl.decode`), and keep prompt + answer as a
data set; evolve from the shipped seed programs (never the teacher)
with the likelihood objective (`evolution.LikelihoodEvaluator`: mean log-likelihood of the
answer tokens under each program, cached teacher-forced rows) and gradient-tuned constants
(`LikelihoodTuner`).

The champion (best score; within 1e-3 nats of it, the lowest cost, from the final
population and the Pareto hall of fame) is simplified (`evolution.simplify`); it is
recovered *symbolically* when it has the teacher's structure with every constant within 5%
(relative), and *behaviourally* when its mean KL(teacher || champion) per step on held-out
contexts is below 0.01. One line per teacher, then `recovery: K/N symbolic, M/N behavioural`.

    .venv/bin/python bench/recovery.py --teachers bench/teachers
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import engine_dsl  # noqa: E402
from engine_dsl import Apply, BoolConst, CountConst, RealConst, WeightsConst  # noqa: E402
from evolution.bridge import SearchSpace, to_expr  # noqa: E402
from evolution.config import EvolutionConfig  # noqa: E402
from evolution.evaluation import (  # noqa: E402
    SMOOTHING,
    LikelihoodEvaluator,
    cache_rows,
    mean_kl,
    sampling_logits,
    target_log_probs,
)
from evolution.population import build_toolbox, evolve_generation, initial_population  # noqa: E402
from evolution.selection import one_standard_error_choice  # noqa: E402
from evolution.simplify import simplify  # noqa: E402
from evolution.tuning import LikelihoodTuner, has_constants  # noqa: E402
from neural import GPT, ByteTokenizer, GPTConfig, TrainConfig, Trainer, get_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def train_model(steps: int, seed: int):
    """A fixed small model: 2 blocks x 2 heads, trained briefly (deterministic, CPU) on a
    fixed text, the source of Python's `argparse` module (the same for a given Python
    version, no download), so that its next-token distributions are neither flat nor
    one-hot."""
    torch.manual_seed(seed)
    path = Path(tempfile.gettempdir()) / f"echo-forge-recovery-{sys.version_info[1]}.txt"
    path.write_text(inspect.getsource(argparse))
    task = get_task(f"text:{path}", chunk_bytes=48)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=96))
    Trainer(model, ByteTokenizer(), task.train,
            TrainConfig(steps=steps, batch_size=32, answer_only=False, seed=seed)).train()
    return model.eval(), task


def teacher_data(model, teacher, prompts: list[list[int]], tokens: int, seed: int):
    """Sequences prompt + teacher answer (right-padded) and the mask of answer positions."""
    tok = ByteTokenizer()
    answers = engine_dsl.decode(model, teacher, prompts, max_new_tokens=tokens,
                                stop_token=tok.eos_id, seed=seed, pad_token=tok.pad_id)
    seqs = [p + a.tokens + ([tok.eos_id] if a.stopped else []) for p, a in zip(prompts, answers,
                                                                               strict=True)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, (p, s) in enumerate(zip(prompts, seqs, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, len(p): len(s)] = True
    return ids, mask


def shape(e):
    """The structure of an expression with its real and count constants abstracted."""
    if isinstance(e, Apply):
        return (e.op, tuple(shape(a) for a in e.args))
    if isinstance(e, BoolConst):
        return ("bool", e.value)
    return type(e).__name__


def constants(e) -> list[float]:
    out = []
    for n in engine_dsl.walk(e):
        if isinstance(n, (RealConst, CountConst)):
            out.append(float(n.value))
        elif isinstance(n, WeightsConst):
            out.extend(n.values)
    return out


def symbolic_match(champion, teacher, tolerance: float = 0.05) -> bool:
    if shape(champion) != shape(teacher):
        return False
    return all(abs(c - t) <= tolerance * abs(t) for c, t in
               zip(constants(champion), constants(teacher), strict=True))


class SafeEvaluator:
    """A program that fails to run (e.g. a Weights length for another model) scores -inf."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, exprs):
        out = []
        for e in exprs:
            try:
                (r,) = self.inner([e])
                out.append(r if math.isfinite(r[0]) else (-1e9, r[1]))
            except Exception:  # noqa: BLE001 - any run-time failure disqualifies the program
                out.append((-1e9, 1e9))
        return out


def champion_of(individuals, tolerance: float = 1e-3):
    """The best score; among those within `tolerance` nats of it, the lowest cost, then the
    smallest (the likelihood cannot see vote/best-of, so their cost must break the tie)."""
    best = max(i.fitness.values[0] for i in individuals)
    near = [i for i in individuals if i.fitness.values[0] >= best - tolerance]
    return min(near, key=lambda i: (i.fitness.values[1], i.fitness.values[2],
                                    -i.fitness.values[0]))


# --- the champion: polish, prune, then Occam's choice ---------------------------------------


def shrinks(e) -> list:
    """Every expression obtained by replacing one node of `e` with one of its arguments of
    the same type (DEAP's mutShrink, exhaustively): the one-step prunings of `e`."""
    if not isinstance(e, Apply):
        return []
    out = []
    t = engine_dsl.type_of(e)
    for a in e.args:
        if isinstance(a, Apply) and engine_dsl.type_of(a) is t:
            out.append(a)
    for i, a in enumerate(e.args):
        for s in shrinks(a):
            out.append(Apply(e.op, e.args[:i] + (s,) + e.args[i + 1:]))
    return out


def _count_paths(e, path=()):
    """Paths (argument indices) to the Count constants that change the per-step
    distribution (top-k's k, layer's k; not vote/best-of n)."""
    if not isinstance(e, Apply):
        return []
    out = []
    for i, a in enumerate(e.args):
        if isinstance(a, CountConst) and e.op in ("top-k", "layer"):
            out.append((*path, i))
        out.extend(_count_paths(a, (*path, i)))
    return out


def _get(e, path):
    for i in path:
        e = e.args[i]
    return e


def _set(e, path, value):
    if not path:
        return value
    i = path[0]
    return Apply(e.op, e.args[:i] + (_set(e.args[i], path[1:], value),) + e.args[i + 1:])


class Polisher:
    """Final local search on the training rows for one candidate: Adam on the relaxed
    likelihood over all rows at increasing sharpness, and a coordinate search over the
    Count constants gradient cannot move (k +- 1, x2, /2 while the exact likelihood
    improves). Keeps whichever program has the best exact training likelihood."""

    def __init__(self, rows, space, steps: int, sharpness=(30.0, 100.0), batch: int = 1024):
        self.rows, self.space, self.steps, self.sharpness = rows, space, steps, sharpness
        self.evaluate = SafeEvaluator(LikelihoodEvaluator(rows))
        self.batch = LikelihoodTuner(rows, batch=batch).tune_batch(0)

    def score(self, e) -> float:
        return self.evaluate([e])[0][0]

    def tune(self, e, best: float):
        if not has_constants(e) or self.steps == 0:
            return e, best
        for sh in self.sharpness:
            try:
                cand = engine_dsl.tune(e, self.batch, steps=self.steps, lr=0.05,
                                       sharpness=sh).program
            except RuntimeError:
                continue
            s = self.score(cand)
            if s > best:
                e, best = cand, s
        return e, best

    def counts(self, e, best: float):
        for path in _count_paths(e):
            hi = self.space.n_layer if _get(e, path[:-1]).op == "layer" else self.space.vocab_size
            improved = True
            while improved:
                improved = False
                k = _get(e, path).value
                for v in sorted({k - 1, k + 1, 2 * k, math.ceil(k / 2)}):
                    if 1 <= v <= hi and v != k:
                        cand = _set(e, path, CountConst(v))
                        s = self.score(cand)
                        if s > best:
                            e, best, improved = cand, s, True
                            break
        return e, best

    def __call__(self, e, floor: float = -math.inf):
        """(polished e, its training log-likelihood); e as it is when it scores below
        `floor` (not worth polishing)."""
        best = self.score(e)
        if best < floor:
            return e, best
        e, best = self.tune(e, best)
        e2, best2 = self.counts(e, best)
        if e2 != e:
            e, best = self.tune(e2, best2)
        return simplify(e, self.space), best


def choose_champion(individuals, seeds, rows, space, args):
    """The reported champion: the `--refine-top` best distinct (simplified) programs of the
    final population and hall of fame, and the seed programs (the search's starting points,
    never the teacher), each polished (`Polisher`), then `--prune-rounds` rounds of the
    one-step prunings of the best `--prune-top` polished programs, polished in turn; then
    Occam's choice on the training rows
    (`one_standard_error_choice`: the cheapest, then smallest, program whose mean
    log-likelihood is within one standard error of the best)."""
    polish = Polisher(rows, space, args.polish_steps)
    ranked, seen = [], set()
    for ind in sorted(individuals, key=lambda i: -i.fitness.values[0]):
        e = simplify(to_expr(ind), space)
        if e not in seen:
            seen.add(e)
            ranked.append(e)
    pool = {}  # polished program -> training log-likelihood
    top = max(polish.score(e) for e in ranked[:1]) if ranked else -math.inf
    frontier = ranked[: args.refine_top]
    for d in seeds:
        e = simplify(d.body, space)
        if e not in seen:
            seen.add(e)
            frontier.append(e)
    for round_ in range(args.prune_rounds + 1):
        for e in frontier:
            t0 = time.perf_counter()
            p, s = polish(e, floor=top - args.polish_gap)
            if os.environ.get("RECOVERY_DEBUG"):
                print(f"  polish {time.perf_counter() - t0:.1f}s {s:.4f} "
                      f"{engine_dsl.expr_to_scheme(e)} -> {engine_dsl.expr_to_scheme(p)}",
                      file=sys.stderr, flush=True)
            if s > -1e9:
                pool[p] = max(s, pool.get(p, -math.inf))
        if round_ == args.prune_rounds:
            break
        best = sorted(pool, key=lambda p: -pool[p])[: args.prune_top]
        frontier = []
        for e in best:
            for s_ in shrinks(e):
                s_ = simplify(s_, space)
                if s_ not in seen:
                    seen.add(s_)
                    frontier.append(s_)
    cands = list(pool)
    scores = []
    for c in cands:
        kind, le, _ = sampling_logits(c)
        with torch.no_grad():
            scores.append(target_log_probs(le, kind, rows).tolist())
    from evolution.evaluation import forward_cost

    i = one_standard_error_choice(scores, [(forward_cost(c), engine_dsl.size(c)) for c in cands])
    return cands[i], len(cands)


def recover(path: Path, model, space, prompts, args) -> dict:
    (teacher_def,) = engine_dsl.read(path.read_text(), str(path))
    teacher = teacher_def.body
    n_train = len(prompts) * 3 // 4
    ids, mask = teacher_data(model, teacher, prompts, args.tokens, args.seed)
    rows = cache_rows(model, ids[:n_train], mask[:n_train])
    held_out = cache_rows(model, ids[n_train:], mask[n_train:])

    seeds = [d for f in sorted((ROOT / "programs").glob("*.scm"))
             for d in engine_dsl.read(f.read_text(), str(f))]
    evaluate = SafeEvaluator(LikelihoodEvaluator(rows))
    seeds = [d for d in seeds if evaluate([d.body])[0][0] > -1e9]  # runnable on this model
    cfg = EvolutionConfig(population_size=args.population, tune_steps=args.tune_steps,
                          tune_lr=0.1, seed=args.seed)
    tb = build_toolbox(cfg, space)
    tuner = LikelihoodTuner(rows, steps=cfg.tune_steps, lr=cfg.tune_lr, batch=512)
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    pop = initial_population(tb, rng, seeds)
    generations = 0
    for _ in range(args.generations):
        pop = evolve_generation(pop, evaluate, tb, rng, tune=tuner)
        generations += 1
        if args.time_per_teacher and time.perf_counter() - t0 > args.time_per_teacher:
            break
    if args.refine_top > 0:
        champion, _ = choose_champion([*pop.individuals, *pop.hall_of_fame], seeds, rows,
                                               space, args)
    else:
        champion = simplify(to_expr(champion_of([*pop.individuals, *pop.hall_of_fame])), space)
    teacher_s = simplify(teacher, space)
    kl = mean_kl(teacher, champion, held_out, smoothing=args.kl_smoothing)
    return {"teacher": path.stem, "champion": engine_dsl.expr_to_scheme(champion),
            "symbolic": symbolic_match(champion, teacher_s), "kl": kl,
            "behavioural": kl < 0.01, "generations": generations,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", default=str(ROOT / "bench" / "teachers"))
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=24, help="answer tokens per prompt")
    ap.add_argument("--population", type=int, default=32)
    ap.add_argument("--generations", type=int, default=12)
    ap.add_argument("--tune-steps", type=int, default=15)
    ap.add_argument("--time-per-teacher", type=float, default=None,
                    help="seconds; stop evolving a teacher after this (default: no limit, so "
                         "results do not depend on the machine's speed)")
    ap.add_argument("--refine-top", type=int, default=6,
                    help="best distinct programs polished and pruned at the end (0: report "
                         "the best-scoring program as it is)")
    ap.add_argument("--prune-rounds", type=int, default=2)
    ap.add_argument("--prune-top", type=int, default=2)
    ap.add_argument("--polish-gap", type=float, default=0.5,
                    help="nats/token; candidates further below the best are not polished")
    ap.add_argument("--polish-steps", type=int, default=25, help="Adam steps per sharpness")
    ap.add_argument("--kl-smoothing", type=float, default=SMOOTHING,
                    help="uniform mixed into the student for the KL (default: the "
                         "likelihood objective's)")
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, task = train_model(args.train_steps, args.seed)
    space = SearchSpace.for_model(model)
    tok = ByteTokenizer()
    prompts = [tok.encode(e.output[:12], bos=True) for e in task.valid[: args.prompts]]
    files = sorted(Path(args.teachers).glob("*.scm"))
    results = []
    for path in files:
        r = recover(path, model, space, prompts, args)
        results.append(r)
        print(f"{r['teacher']}: symbolic={'yes' if r['symbolic'] else 'no'} "
              f"behavioural={'yes' if r['behavioural'] else 'no'} kl={r['kl']:.4f} "
              f"champion={r['champion']} ({r['generations']} generations, {r['seconds']} s)",
              flush=True)
    n = len(results)
    k = sum(r["symbolic"] for r in results)
    m = sum(r["behavioural"] for r in results)
    if os.environ.get("RECOVERY_JSON"):
        Path(os.environ["RECOVERY_JSON"]).write_text(json.dumps(results, indent=2))
    print(f"recovery: {k}/{n} symbolic, {m}/{n} behavioural")
    return 0


if __name__ == "__main__":
    sys.exit(main())
