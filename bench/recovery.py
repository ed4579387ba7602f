"""Benchmark: can evolution recover the program that generated a data set?

For each teacher program file in --teachers: decode a fixed small trained model with the
teacher on held-out text prompts (`engine_dsl.decode`, `--samples` independent answers per
prompt), and keep prompt + answer as a data set (3/4 of the prompts for training, 1/4 held
out); evolve from the shipped seed programs (never the teacher) with the likelihood
objective (`evolution.LikelihoodEvaluator`: mean log-likelihood of the answer tokens under
each program, cached teacher-forced rows; evolution scores on a fixed subset of the
training rows) and gradient-tuned constants (`LikelihoodTuner`).

The champion is chosen on the training rows only (`choose_champion`: the best evolved
programs and the seeds, polished, then a local search over their one-step neighbours
(prunings and same-signature primitive replacements), an exact coordinate search of the
real constants, and Occam's choice), then simplified (`evolution.simplify`); it is
recovered *symbolically* when it has the teacher's structure with every constant within 5%
(relative), and *behaviourally* when its mean KL(teacher || champion) per step on the
held-out contexts is below 0.01. One line per teacher, then
`recovery: K/N symbolic, M/N behavioural`.

    .venv/bin/python bench/recovery.py --teachers bench/teachers
    .venv/bin/python bench/recovery.py --teachers bench/teachers-heldout

`bench/teachers` are the 8 teachers the settings below were tuned on; `bench/teachers-heldout`
10 written after, to check that they carry over (docs/BENCHMARKS.md, "Held-out teachers").
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
from engine_dsl.types import ANY  # noqa: E402
from evolution.bridge import Individual, SearchSpace, slot_class, to_expr, to_tree  # noqa: E402
from evolution.config import EvolutionConfig  # noqa: E402
from evolution.evaluation import (  # noqa: E402
    SMOOTHING,
    LikelihoodEvaluator,
    cache_rows,
    forward_cost,
    mean_kl,
    sampling_logits,
    target_log_probs,
)
from evolution.population import build_toolbox, evolve_generation, initial_population  # noqa: E402
from evolution.random_trees import (  # noqa: E402
    LITERAL_SLOTS,
    ConstantSampler,
)
from evolution.selection import one_standard_error_choice  # noqa: E402
from evolution.simplify import simplify  # noqa: E402
from evolution.tuner import LikelihoodTuner, has_constants  # noqa: E402
from evolution.variation import all_node_replacements, all_shrinks  # noqa: E402
from neural import GPT, ByteTokenizer, Example, GPTConfig, TrainConfig, Trainer  # noqa: E402
from neural.tasks import split_examples  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def train_model(steps: int, seed: int):
    """A fixed small model: 2 blocks x 2 heads, trained briefly (deterministic, CPU) on a
    fixed text, the source of Python's `argparse` module (the same for a given Python
    version, no download), so that its next-token distributions are neither flat nor
    one-hot."""
    torch.manual_seed(seed)
    path = Path(tempfile.gettempdir()) / f"echo-forge-recovery-{sys.version_info[1]}.txt"
    path.write_text(inspect.getsource(argparse))
    task = split_examples("recovery", "text", text_chunks(path.read_text(), 48))
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=96))
    Trainer(model, ByteTokenizer(), task.train,
            TrainConfig(steps=steps, batch_size=32, answer_only=False, seed=seed)).train()
    return model.eval(), task


def text_chunks(text: str, chunk_bytes: int) -> list[Example]:
    """`Example("", piece)` for each non-blank line of `text` cut into pieces of at most
    `chunk_bytes` UTF-8 bytes (never inside a character)."""
    examples = []
    for line in text.splitlines():
        piece, size = [], 0
        for ch in line.strip():
            n = len(ch.encode("utf-8"))
            if size + n > chunk_bytes and piece:
                examples.append(Example("", "".join(piece)))
                piece, size = [], 0
            piece.append(ch)
            size += n
        if piece:
            examples.append(Example("", "".join(piece)))
    return examples


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


def neighbours(e) -> list:
    """The one-step neighbourhood of `e` for the final local search: every shrink (a node
    replaced by a same-typed argument, DEAP's mutShrink done exhaustively: the prunings)
    and every primitive replacement (a node replaced by another primitive of the same
    signature, DEAP's mutNodeReplacement done exhaustively: greedy <-> sample, top-p <->
    min-p, entropy <-> max-prob, ...; a real argument keeps its value where the new slot's
    domain holds it). See `evolution.variation.all_shrinks` / `all_node_replacements`."""
    ind = Individual(to_tree(e))
    return [to_expr(t) for t in all_shrinks(ind) + all_node_replacements(ind)]


def _count_paths(e, sampler: ConstantSampler, path=()):
    """(path, largest value) of every Count constant that changes the per-step distribution
    (top-k's k, layer's k: the uncapped Count slots of the registry; vote/best-of n are
    capped by `Limits.max_votes`); the range is the GP's (`ConstantSampler.count_range`)."""
    if not isinstance(e, Apply):
        return []
    out = []
    prim = engine_dsl.PRIMITIVES[e.op]
    for i, a in enumerate(e.args):
        if isinstance(a, CountConst) and not prim.args[i].cap:
            _, key = LITERAL_SLOTS[slot_class(prim, i)]
            out.append(((*path, i), sampler.count_range(key)[1]))
        out.extend(_count_paths(a, sampler, (*path, i)))
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


def _real_paths(e, path=()):
    """(path, domain) of every tunable Real literal of `e`, in prefix order."""
    if not isinstance(e, Apply):
        return []
    out = []
    prim = engine_dsl.PRIMITIVES[e.op]
    for i, a in enumerate(e.args):
        if isinstance(a, RealConst) and not a.fixed:
            out.append(((*path, i), prim.args[i].domain or ANY))
        else:
            out.extend(_real_paths(a, (*path, i)))
    return out


GOLDEN = (math.sqrt(5) - 1) / 2


def line_search(f, z0: float, f0: float, width: float, scan: int = 3, iters: int = 8,
                extend: int = 3):
    """Maximise f over z near z0 without derivatives: a scan of 2 * scan + 1 points spaced
    width / scan (moved on while the best lies at an end, at most `extend` times), then a
    golden-section search in the two cells around the best point. f need not be smooth
    (exact likelihoods are piecewise constant in a truncation's threshold); returns the
    best (z, f(z)) seen."""
    h = width / scan
    seen = {z0: f0}

    def at(z):
        if z not in seen:
            seen[z] = f(z)
        return seen[z]

    lo, hi = -scan, scan
    for k in range(lo, hi + 1):
        at(z0 + k * h)
    for _ in range(extend):
        zb = max(seen, key=seen.get)
        if zb == z0 + hi * h:
            hi += scan
            for k in range(hi - scan + 1, hi + 1):
                at(z0 + k * h)
        elif zb == z0 + lo * h:
            lo -= scan
            for k in range(lo, lo + scan):
                at(z0 + k * h)
        else:
            break
    zb = max(seen, key=seen.get)
    a, b = zb - h, zb + h
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = at(c), at(d)
    for _ in range(iters):
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = at(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = at(d)
    zb = max(seen, key=seen.get)
    return zb, seen[zb]


class Polisher:
    """Final local search on the training rows for one candidate. Keeps whichever program
    has the best exact training likelihood (all training rows) among:

    1. a coordinate search over the Count constants gradient cannot move (top-k's k,
       layer's k: k +- 1, x2 (capped at the range's end), /2 while the exact likelihood
       improves);
    2. Adam on the relaxed likelihood (`batch` rows of `tune_rows`) at increasing
       sharpness, then the Count search again if the constants moved;
    3. `refine` (for the best program of each structure near the best, see
       `choose_champion`): an exact coordinate search over the real constants
       (`line_search` on each constant's unconstrained parameter, the map tuning uses,
       on the exact likelihood of all training rows). This
       removes what the relaxed objective's soft masks and sigmoid-blended `if` leave
       (e.g. a top-p mass just below the exact optimum's cliff)."""

    def __init__(self, rows, space, steps: int, sharpness=(30.0, 100.0), batch: int = 1024,
                 refine_width: float = 0.6, refine_passes: int = 2, tune_rows=None):
        self.rows, self.space, self.steps, self.sharpness = rows, space, steps, sharpness
        self.evaluate = SafeEvaluator(LikelihoodEvaluator(rows))
        tune_rows = rows if tune_rows is None else tune_rows
        self.batch = LikelihoodTuner(tune_rows, batch=batch).tune_batch(0)
        self.refine_width, self.refine_passes = refine_width, refine_passes
        self.sampler = ConstantSampler(space)

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
        for path, hi in _count_paths(e, self.sampler):
            while True:  # steepest ascent over k +- 1, 2k (capped), k / 2
                k = _get(e, path).value
                moves = [(self.score(c), c) for v in
                         sorted({k - 1, k + 1, min(2 * k, hi), math.ceil(k / 2)})
                         if 1 <= v <= hi and v != k
                         for c in [_set(e, path, CountConst(v))]]
                if not moves:
                    break
                s, c = max(moves, key=lambda m: m[0])
                if s <= best + 1e-6:  # not float noise (k moving one token at a time)
                    break
                e, best = c, s
        return e, best

    def refine(self, e, best: float):
        paths = _real_paths(e)
        for _ in range(self.refine_passes if len(paths) > 1 else 1):
            moved = False
            for path, dom in paths:
                z0 = dom.unconstrained(_get(e, path).value)

                def f(z, e=e, path=path, dom=dom):
                    return self.score(_set(e, path, RealConst(dom.constrained(z))))

                z, s = line_search(f, z0, best, self.refine_width)
                if s > best:
                    e, best, moved = _set(e, path, RealConst(dom.constrained(z))), s, True
            if not moved:
                break
        return e, best

    def __call__(self, e, floor: float = -math.inf, score: float | None = None):
        """(polished e, its training log-likelihood): steps 1 and 2; e as it is after the
        Count search when it scores below `floor` (not worth polishing). `score`: e's own,
        when the caller has it already."""
        best = self.score(e) if score is None else score
        e, best = self.counts(e, best)
        if best < floor:
            return simplify(e, self.space), best
        e2, best2 = self.tune(e, best)
        if e2 != e:
            e, best = self.counts(e2, best2)
        return simplify(e, self.space), best


def _structure(decoder):
    """A decoder's per-step distribution up to constants: (sample or greedy, the shape of
    its Logits expression); vote/best-of wrappers do not change it."""
    kind, logits_expr, _ = sampling_logits(decoder)
    return kind, shape(logits_expr)


def _one_line(e) -> str:
    return " ".join(engine_dsl.expr_to_scheme(e).split())


def choose_champion(individuals, seeds, rows, space, args, tune_rows=None):
    """The reported champion: the `--refine-top` best distinct (simplified) programs of the
    final population and hall of fame, and the seed programs (the search's starting points,
    never the teacher), each polished (`Polisher`); then `--prune-rounds` rounds of local
    search: the one-step neighbours (`neighbours`: shrinks and primitive replacements) of
    the best `--prune-top` polished programs (and, in the first round, of the seeds that
    scored too low to polish, e.g. a greedy program under the likelihood objective),
    polished in turn; after each round, the exact coordinate search (`Polisher.refine`)
    for the best program of each of the `--refine-per-round` smallest structures within
    `--refine-gap` of the best; then Occam's choice on the training rows
    (`one_standard_error_choice`: the cheapest, then smallest, program whose mean
    log-likelihood is within one standard error of the best)."""
    polish = Polisher(rows, space, args.polish_steps, batch=args.polish_rows,
                      tune_rows=tune_rows)
    debug = os.environ.get("RECOVERY_DEBUG")
    ranked, seen = [], set()
    for ind in sorted(individuals, key=lambda i: -i.fitness.values[0]):
        e = simplify(to_expr(ind), space)
        if e not in seen:
            seen.add(e)
            ranked.append(e)
    pool = {}  # polished program -> training log-likelihood
    top = polish.score(ranked[0]) if ranked else -math.inf
    frontier = ranked[: args.refine_top]
    seed_exprs = []
    for d in seeds:
        e = simplify(d.body, space)
        seed_exprs.append(e)
        if e not in seen:
            seen.add(e)
            frontier.append(e)
    refined = set()  # structures whose best program got the exact coordinate search
    gated = set()  # programs scoring too low to polish
    for round_ in range(args.prune_rounds + 1):
        scored = sorted(((polish.score(e), i) for i, e in enumerate(frontier)), reverse=True)
        for raw, i in scored:
            e = frontier[i]
            if raw <= -1e9:
                continue
            t0 = time.perf_counter()
            p, s = polish(e, floor=top - args.polish_gap, score=raw)
            if debug:
                print(f"  polish {time.perf_counter() - t0:.1f}s {raw:.4f} -> {s:.4f} "
                      f"{_one_line(e)} -> {_one_line(p)}", file=sys.stderr, flush=True)
            if s < top - args.polish_gap:
                gated.add(e)
            if s > -1e9:
                pool[p] = max(s, pool.get(p, -math.inf))
        # the exact search, once per structure (its best program), for the smallest
        # `--refine-per-round` structures near the best
        best = max(pool.values(), default=-math.inf)
        todo, kinds = [], set()
        for p in sorted(pool, key=lambda p: -pool[p]):
            if pool[p] < best - args.refine_gap:
                break
            k = _structure(p)
            if k not in refined and k not in kinds and _real_paths(p):
                kinds.add(k)
                todo.append(p)
        for p in sorted(todo, key=lambda p: (engine_dsl.size(p), -pool[p]))[
                : args.refine_per_round]:
            refined.add(_structure(p))
            t0 = time.perf_counter()
            q, s = polish.refine(p, pool[p])
            q = simplify(q, space)
            if debug:
                print(f"  refine {time.perf_counter() - t0:.1f}s {pool[p]:.5f} -> {s:.5f} "
                      f"{_one_line(q)}", file=sys.stderr, flush=True)
            pool[q] = max(s, pool.get(q, -math.inf))
        if round_ == args.prune_rounds:
            break
        base, kinds = [], set()  # the best program of each of the best structures
        for p in sorted(pool, key=lambda p: -pool[p]):
            if _structure(p) not in kinds and len(base) < args.prune_top:
                kinds.add(_structure(p))
                base.append(p)
        if round_ == 0:  # a second chance for the seeds too poor to polish
            base += [e for e in seed_exprs if e in gated]
        frontier = []
        for e in base:
            for n in neighbours(e):
                n = simplify(n, space)
                if n not in seen:
                    seen.add(n)
                    frontier.append(n)
    cands = list(pool)
    scores = []
    for c in cands:
        kind, le, _ = sampling_logits(c)
        with torch.no_grad():
            scores.append(target_log_probs(le, kind, rows).tolist())
    i = one_standard_error_choice(scores, [(forward_cost(c), engine_dsl.size(c)) for c in cands],
                                  tolerance=args.equivalence)
    if debug:
        print(f"  chosen {engine_dsl.expr_to_scheme(cands[i])} of {len(cands)}; best "
              f"{max(pool.values()):.5f}", file=sys.stderr, flush=True)
    return cands[i], len(cands)


def recover(path: Path, model, space, prompts, args) -> dict:
    (teacher_def,) = engine_dsl.read(path.read_text(), str(path))
    teacher = teacher_def.body
    t0 = time.perf_counter()
    # `--samples` draws per prompt (each prompt's copies are adjacent, so the split below
    # keeps every held-out prompt out of training)
    n_train = len(prompts) * 3 // 4 * args.samples
    ids, mask = teacher_data(model, teacher, [p for p in prompts for _ in range(args.samples)],
                             args.tokens, args.seed)
    rows = cache_rows(model, ids[:n_train], mask[:n_train])
    held_out = cache_rows(model, ids[n_train:], mask[n_train:])
    # evolution (scores and tuning) and the Adam polish work on a fixed random subset of
    # the training answers (its own cached rows, so a head-gated forward pass runs over
    # those sequences only); the exact scores of the final polish and choice use them all
    sub = rows
    if args.evolve_answers and args.evolve_answers < n_train:
        g = torch.Generator().manual_seed(args.seed)
        pick = torch.randperm(n_train, generator=g)[: args.evolve_answers].sort().values
        sub = cache_rows(model, ids[pick], mask[pick])

    seeds = [d for f in sorted((ROOT / "programs").glob("*.scm"))
             for d in engine_dsl.read(f.read_text(), str(f))]
    evaluate = SafeEvaluator(LikelihoodEvaluator(sub))
    seeds = [d for d in seeds if evaluate([d.body])[0][0] > -1e9]  # runnable on this model
    cfg = EvolutionConfig(population_size=args.population, tune_steps=args.tune_steps,
                          tune_lr=0.1, seed=args.seed)
    tb = build_toolbox(cfg, space)
    tuner = LikelihoodTuner(sub, steps=cfg.tune_steps, lr=cfg.tune_lr, batch=512,
                            guard=args.tune_guard)
    rng = random.Random(args.seed)
    pop = initial_population(tb, rng, seeds)
    generations = 0
    for _ in range(args.generations):
        pop = evolve_generation(pop, evaluate, tb, rng, tune=tuner)
        generations += 1
        if args.time_per_teacher and time.perf_counter() - t0 > args.time_per_teacher:
            break
    if os.environ.get("RECOVERY_DEBUG"):
        print(f"  evolution done at {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.refine_top > 0:
        champion, _ = choose_champion([*pop.individuals, *pop.hall_of_fame], seeds, rows,
                                      space, args, tune_rows=sub)
    else:
        champion = simplify(to_expr(champion_of([*pop.individuals, *pop.hall_of_fame])), space)
    teacher_s = simplify(teacher, space)
    kl = mean_kl(teacher, champion, held_out, smoothing=args.kl_smoothing)
    return {"teacher": path.stem, "champion": engine_dsl.expr_to_scheme(champion),
            "symbolic": symbolic_match(champion, teacher_s), "kl": kl,
            "behavioural": kl < 0.01, "generations": generations,
            "tunings": tuner.tunings, "undone": tuner.rejected,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", default=str(ROOT / "bench" / "teachers"))
    ap.add_argument("--prompts", type=int, default=256,
                    help="text prompts (the task's valid split, then its test split)")
    ap.add_argument("--samples", type=int, default=4,
                    help="teacher answers drawn per prompt (independent draws)")
    ap.add_argument("--tokens", type=int, default=24, help="answer tokens per answer")
    ap.add_argument("--evolve-answers", type=int, default=192,
                    help="training answers evolution scores and tunes on (and the Adam "
                         "polish); the final exact scores use all of them (0: all)")
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
    ap.add_argument("--refine-per-round", type=int, default=3,
                    help="structures given the exact coordinate search per round")
    ap.add_argument("--equivalence", type=float, default=1e-3,
                    help="nats/token; in Occam's choice, programs within this of the best "
                         "count as equally good whatever the standard error")
    ap.add_argument("--polish-rows", type=int, default=1024, help="rows per Adam polish")
    ap.add_argument("--refine-gap", type=float, default=0.02,
                    help="nats/token; polished programs within this of the best get the exact "
                         "coordinate search of their real constants")
    ap.add_argument("--kl-smoothing", type=float, default=SMOOTHING,
                    help="uniform mixed into the student for the KL (default: the "
                         "likelihood objective's)")
    ap.add_argument("--no-tune-guard", dest="tune_guard", action="store_false",
                    help="evolution keeps every tuning, also one that made the exact "
                         "likelihood worse (LikelihoodTuner's guard off)")
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: what the figures in docs/BENCHMARKS.md used)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, task = train_model(args.train_steps, args.seed)
    space = SearchSpace.for_model(model)
    tok = ByteTokenizer()
    prompts = [tok.encode(e.output[:12], bos=True)
               for e in [*task.valid, *task.test][: args.prompts]]
    files = sorted(Path(args.teachers).glob("*.scm"))
    results = []
    for path in files:
        r = recover(path, model, space, prompts, args)
        results.append(r)
        print(f"{r['teacher']}: symbolic={'yes' if r['symbolic'] else 'no'} "
              f"behavioural={'yes' if r['behavioural'] else 'no'} kl={r['kl']:.4f} "
              f"champion={r['champion']} ({r['generations']} generations, {r['seconds']} s, "
              + (f"{r['undone']}/{r['tunings']} tunings undone by the guard)" if args.tune_guard
                 else f"{r['tunings']} tunings)"),
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
