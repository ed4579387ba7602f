"""Tuned baselines on the footing of the evolved champion (bench/text.py, bench/quality.py).

A decoder tuned by Optuna on a run's valid prompts starts where evolution starts (its first
trial a program evolution is seeded with) and is then chosen as the run's champion is
(`CoEvolution.select_champion`): its best trials and the task's reference decoder re-scored
on the run's fresh selection prompts with the same draws, by the same one-standard-error
rule. Without that last step the best of many trials on a few noisy valid prompts carries
the winner's curse into the test split, and the champion does not.
"""

from __future__ import annotations

import math

import engine_dsl
from engine_dsl import Type
from engine_dsl.printer import expr_to_scheme


def tpe_ranked(propose, score, trials: int, batch: int, seed: int, first: dict):
    """Optuna's TPE over the programs `propose(trial) -> source` builds from the
    parameters it suggests, `trials` evaluations asked and scored `batch` at a time
    (`score(sources) -> valid scores`), the first trial `first` (parameter -> value).
    Returns the distinct programs tried, best valid score first (ties: first tried first),
    with their best scores."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(first)
    best: dict[str, float] = {}  # program -> its best valid score
    done = 0
    while done < trials:
        asked = [study.ask() for _ in range(min(batch, trials - done))]
        sources = [propose(t) for t in asked]
        for t, src, value in zip(asked, sources, score(sources), strict=True):
            study.tell(t, value)
            best[src] = max(value, best.get(src, -math.inf))
        done += len(asked)
    return sorted(best.items(), key=lambda item: -item[1])


def select_tuned(run, ranked, count: int):
    """The tuned program on the footing of the evolved champion: the `count` best of
    `ranked` ((source, valid score), best first: `tpe_ranked`; as many as the distinct
    programs of evolution's last front and champion) and the task's reference decoder
    (`CoEvolution.reference_decoder`: greedy; nucleus 0.95 on text tasks) re-scored on the
    run's fresh selection prompts with the same draws, chosen by the same one-standard-error
    rule (`CoEvolution.choose_on_fresh`). Returns (its source, its fresh valid score, the
    number of candidates)."""
    exprs = [run.reference_decoder()[1]]
    exprs += [engine_dsl.read_expr(src, Type.DECODER) for src, _ in ranked[:max(count, 1)]]
    k, values, _ = run.choose_on_fresh(exprs)
    return expr_to_scheme(exprs[k]), values[k], len(exprs)
