"""Selection: NSGA-II survival, the Pareto-front hall of fame, tournaments with parsimony.

Fitness values are (score, cost, size) with weights (+1, -1, -1) (see `bridge.Fitness`).
DEAP's `selNSGA2` draws no random numbers; the tournaments here take an explicit
`random.Random` instead of DEAP's global-`random` versions.
"""

from __future__ import annotations

import math
import random

from deap import tools
from deap.tools.emo import assignCrowdingDist

from .bridge import tree_key


def select_nsga2(individuals: list, k: int) -> list:
    """The k survivors of NSGA-II (non-dominated sorting, then crowding distance)."""
    return tools.selNSGA2(individuals, k)


def hall_of_fame() -> tools.ParetoFront:
    """The Pareto front of every individual seen; two programs are the same when their
    trees (structure and constants) are equal."""
    return tools.ParetoFront(similar=lambda a, b: tree_key(a) == tree_key(b))


def pareto_ranks(individuals: list) -> dict[int, tuple[int, float]]:
    """id(ind) -> (front index, -crowding distance): smaller is better."""
    fronts = tools.sortNondominated(individuals, len(individuals))
    out = {}
    for r, front in enumerate(fronts):
        assignCrowdingDist(front)
        for ind in front:
            out[id(ind)] = (r, -ind.fitness.crowding_dist)
    return out


def select_parents_nsga2(individuals: list, k: int, rng: random.Random) -> list:
    """k parents by binary tournaments on (Pareto rank, crowding distance)."""
    ranks = pareto_ranks(individuals)
    chosen = []
    for _ in range(k):
        a, b = rng.choice(individuals), rng.choice(individuals)
        ka, kb = ranks[id(a)], ranks[id(b)]
        chosen.append(a if ka < kb else b if kb < ka else (a if rng.random() < 0.5 else b))
    return chosen


def _score_key(ind) -> tuple[float, float]:
    score, cost = ind.fitness.values[0], ind.fitness.values[1]
    return (score, -cost)


def select_double_tournament(individuals: list, k: int, rng: random.Random,
                             fitness_size: int = 3, parsimony_size: float = 1.4,
                             replace: bool = True) -> list:
    """Luke & Panait's double tournament (DEAP's selDoubleTournament, fitness first): each
    pick is a size tournament between two winners of fitness tournaments (score up, then
    cost down); the smaller wins with probability parsimony_size / 2. replace=False picks
    k distinct individuals."""
    pool = list(individuals)
    chosen = []

    def fitness_winner():
        aspirants = [pool[rng.randrange(len(pool))] for _ in range(fitness_size)]
        return max(aspirants, key=_score_key)

    for _ in range(min(k, len(pool)) if not replace else k):
        a, b = fitness_winner(), fitness_winner()
        if len(a) > len(b):
            a, b = b, a
        prob = 0.5 if len(a) == len(b) else parsimony_size / 2
        win = a if rng.random() < prob else b
        chosen.append(win)
        if not replace:
            pool = [i for i in pool if i is not win]
    return chosen


def select_survivors(individuals: list, k: int, rng: random.Random, kind: str = "nsga2",
                     fitness_size: int = 3, parsimony_size: float = 1.4) -> list:
    """The k individuals that make the next generation, all distinct objects.

    "nsga2": NSGA-II. "tournament": the best score (elitism), then double tournaments
    without replacement."""
    if kind == "nsga2":
        return select_nsga2(individuals, k)
    if kind != "tournament":
        raise ValueError(f"unknown selection {kind!r}")
    best = max(individuals, key=_score_key)
    rest = [i for i in individuals if i is not best]
    return [best, *select_double_tournament(rest, k - 1, rng, fitness_size, parsimony_size,
                                            replace=False)][:k]


def select_parents(individuals: list, k: int, rng: random.Random, kind: str = "nsga2",
                   fitness_size: int = 3, parsimony_size: float = 1.4) -> list:
    """k parents for variation (with replacement)."""
    if kind == "nsga2":
        return select_parents_nsga2(individuals, k, rng)
    return select_double_tournament(individuals, k, rng, fitness_size, parsimony_size)


def one_standard_error_choice(row_scores: list, complexity: list, se_multiple: float = 1.0,
                              tolerance: float = 0.0) -> int:
    """Occam's choice among candidate models scored on the same rows (the "one standard
    error rule" of Breiman et al.'s CART, the spirit of PySR's model selection): the least
    complex candidate whose mean score is within `se_multiple` standard errors of the best
    mean, the standard error being that of the paired per-row differences with the best.

    row_scores: per candidate, a sequence of per-row scores (higher is better; same rows,
    same order); complexity: per candidate, a sortable key (smaller is simpler, e.g.
    (cost, size)). tolerance: a margin of practical equivalence, in the scores' unit: a
    candidate whose mean is within it of the best is eligible however small the standard
    error (a tiny but consistent gain, e.g. from cutting a few never-observed tokens, does
    not buy complexity). Ties in complexity go to the higher mean. Returns the chosen
    index."""
    if not row_scores or len(row_scores) != len(complexity):
        raise ValueError("one score sequence and one complexity per candidate")
    rows = [list(map(float, r)) for r in row_scores]
    n = len(rows[0])
    if any(len(r) != n for r in rows):
        raise ValueError("every candidate must be scored on the same rows")
    means = [sum(r) / n for r in rows]
    best = max(range(len(rows)), key=lambda i: means[i])
    errors = []
    for r in rows:
        d = [b - x for b, x in zip(rows[best], r, strict=True)]
        gap = sum(d) / n
        errors.append(math.sqrt(sum((x - gap) ** 2 for x in d) / max(n - 1, 1) / n))
    return within_noise(means, errors, complexity, se_multiple, tolerance)


def resampled_gap_errors(values: list, resampled: list, scale: float = 1.0) -> list[float]:
    """For a statistic of all rows that is no mean of per-row scores (MAUVE, a pooled
    perplexity gap), the standard error of each candidate's gap to the best value (0 for the
    best), the errors `within_noise` (the one-standard-error rule) and `race_survivors`
    take: `values[i]` is candidate i's statistic, `resampled[i][b]` its statistic on
    resample b of the rows (the same resamples for every candidate, so the differences are
    paired), and the error is the standard deviation of the resampled gaps times `scale`
    (`report.half_sample_scale` for halves of the rows, 1 for a bootstrap)."""
    if not values or len(values) != len(resampled):
        raise ValueError("one resampled sequence per value")
    b = len(resampled[0])
    if b < 2 or any(len(r) != b for r in resampled):
        raise ValueError("every candidate needs the same resamples, at least two")
    best = max(range(len(values)), key=lambda i: values[i])
    errors = []
    for r in resampled:
        d = [x - y for x, y in zip(resampled[best], r, strict=True)]
        mean = sum(d) / b
        errors.append(scale * math.sqrt(sum((x - mean) ** 2 for x in d) / (b - 1)))
    return errors


def race_survivors(values: list, errors: list, most: int, keep: int | None = None,
                   se_multiple: float = 2.0) -> list[int]:
    """The candidates a race's next stage scores again (indexes, in their order): those
    whose gap to the best value is at most `se_multiple` standard errors (`errors[i]`, of
    the paired gap), the `most` highest-valued of them, and `keep` (the reference a report
    compares against) in any case. A candidate worse than the best by more than its noise
    leaves the race; the survivors are few enough to score on many more prompts."""
    if len(values) != len(errors) or most < 1:
        raise ValueError("one error per value, and at least one survivor")
    best = max(values)
    close = [i for i, (v, e) in enumerate(zip(values, errors, strict=True))
             if best - v <= se_multiple * e]
    chosen = set(sorted(close, key=lambda i: -values[i])[:most])
    if keep is not None:
        chosen.add(keep)
    return sorted(chosen)


def within_noise(values, errors, complexity, se_multiple: float = 1.0,
                 tolerance: float = 0.0) -> int:
    """The least complex candidate whose gap to the best value is at most `se_multiple`
    times its standard error (`errors[i]`) or `tolerance`; ties to the higher value."""
    best = max(values)
    eligible = [i for i, (v, e) in enumerate(zip(values, errors, strict=True))
                if best - v <= max(se_multiple * e, tolerance)]
    return min(eligible, key=lambda i: (complexity[i], -values[i]))
