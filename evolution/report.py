"""What a run shows a person: programs as a person writes them, bootstrap intervals, plots.

Programs a run writes for reading (generation files, hall of fame, the per-generation line,
`show`, `lineage`) are `readable`: simplified by `evolution.simplify` and with their tuned
constants rounded to `SIGNIFICANT` significant digits (more where the rounded value would
leave its domain; `(fixed ...)` constants are printed exactly). The exact values stay in the
checkpoint (resume) and in log.jsonl's `constants`. Nothing here needs the model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

SIGNIFICANT = 4  # significant digits of tuned constants in the programs a run writes
SCORE_NAME = {"answer": "exact match", "text": "text.objective of the continuations"}
SCORE_MEANING = {
    "answer": "exact match: the fraction of prompts whose extracted answer equals the "
              "reference",
    "text": "how close the program's continuations of held-out prompts are to the human "
            "ones, by the frozen judge (text.objective; the default, human: minus the gaps "
            "in judge log-perplexity and rep-4 / 100, 0 = like the human text); higher is "
            "better",
}


def round_constants(expr, digits: int):
    """`expr` with its tunable Real constants and Weights rounded to `digits` significant
    digits (fixed constants are a hand-editor's values: kept exactly)."""
    from engine_dsl.nodes import Apply, RealConst, WeightsConst

    def r(x: float) -> float:
        return float(f"{x:.{digits}g}")

    def go(e):
        if isinstance(e, RealConst) and not e.fixed:
            return replace(e, value=r(e.value))
        if isinstance(e, WeightsConst):
            return replace(e, values=tuple(r(v) for v in e.values))
        if isinstance(e, Apply) and e.args:
            return replace(e, args=tuple(go(a) for a in e.args))
        return e

    return go(expr)


def readable(expr, space=None):
    """A Decoder program as a person would write it: simplified (`space`: the run's
    `SearchSpace`, for the rules that need the model's shape), constants at `SIGNIFICANT`
    digits, or more where rounding would take one out of its domain."""
    from engine_dsl import DslError, Type, read_expr
    from engine_dsl.printer import expr_to_scheme

    from .simplify import simplify

    expr = simplify(expr, space)
    limits = space.limits if space is not None else None
    for digits in (SIGNIFICANT, 6, 8):
        shown = round_constants(expr, digits)
        try:
            read_expr(expr_to_scheme(shown), Type.DECODER, limits=limits)
            return shown
        except DslError:  # e.g. a top-p of 0.99996 would print as 1.0
            continue
    return expr


def one_line(source, width: int = 60) -> str:
    """A program (an Expr or its text) on one line, elided in the middle to `width` columns."""
    if not isinstance(source, str):
        from engine_dsl.printer import expr_to_scheme

        source = expr_to_scheme(source)
    text = " ".join(source.split())
    if len(text) <= width:
        return text
    keep = width - 5
    return f"{text[:keep - keep // 2].rstrip()} ... {text[len(text) - keep // 2:].lstrip()}"


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean and a percentile bootstrap interval of it. The values
    are sorted first, so the same values in any order give the same interval (the hall of
    fame's interval of k correct answers of n is the one `eval` gives)."""
    vals = sorted(float(v) for v in values)
    if not vals:
        return (math.nan, math.nan, math.nan)
    mean = sum(vals) / len(vals)
    if resamples <= 0 or len(vals) == 1:
        return (mean, mean, mean)
    rng = random.Random(seed)
    n = len(vals)
    means = sorted(sum(vals[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo_i = int(math.floor((1 - level) / 2 * (resamples - 1)))
    hi_i = int(math.ceil((1 + level) / 2 * (resamples - 1)))
    return (mean, means[lo_i], means[hi_i])


def half_samples(n: int, resamples: int, seed: int = 0) -> list[list[int]]:
    """`resamples` random halves of range(n): n // 2 distinct indices each (without
    replacement), for `half_sample_interval`."""
    rng = random.Random(seed)
    return [sorted(rng.sample(range(n), n // 2)) for _ in range(resamples)] if n >= 2 else []


def half_sample_scale(n: int) -> float:
    """The factor that turns the spread of a statistic over halves of n rows into the spread
    of the statistic on all n: a mean of m = n // 2 rows drawn without replacement has
    variance S^2 (n - m) / (m n), the mean of all n rows S^2 / n, so the factor is
    sqrt(m / (n - m)) (1 for even n)."""
    m = n // 2
    return math.sqrt(m / (n - m))


def half_sample_interval(point: float, values: Sequence[float], n: int,
                         level: float = 0.95) -> tuple[float, float]:
    """(low, high): a 95% interval of a statistic whose value on all n rows is `point`, from
    its `values` on random halves of the rows (`half_samples`): the point plus the
    percentiles of the halves' deviations from their mean, scaled by `half_sample_scale`.
    Unlike resampling with replacement, halves hold no row twice, so statistics that
    duplicates distort (MAUVE's k-means quantization, a Zipf fit of pooled counts) keep
    their shape; centring on the halves' own mean removes what a statistic's value owes to
    the sample size (MAUVE at n / 2 points, with n / 20 clusters, is not MAUVE at n)."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals or math.isnan(point):
        return point, point
    centre, k = sum(vals) / len(vals), half_sample_scale(n)
    dev = sorted(k * (v - centre) for v in vals)
    lo_i = int(math.floor((1 - level) / 2 * (len(dev) - 1)))
    hi_i = int(math.ceil((1 + level) / 2 * (len(dev) - 1)))
    return point + dev[lo_i], point + dev[hi_i]


def read_log(run_dir: str | Path) -> list[dict]:
    from .rundir import RunDir

    return RunDir(run_dir).log_entries()


def constant_lines(log: list[dict]) -> list[tuple[str, list[tuple[int, float]]]]:
    """(label, [(generation, value)]) of the champion's constants: one line per constant of
    a champion lineage (consecutive generations whose champions have the same constant
    slots), labelled by slot and the lineage's first champion, e.g. 'temperature.t (g1-5)'."""
    lines: list[tuple[str, list]] = []
    current: dict[str, list] = {}
    slots = None
    for e in log:
        constants = e["champion"].get("constants", {})
        if tuple(constants) != slots:
            slots, current = tuple(constants), {}
            for key in constants:
                current[key] = []
                lines.append((f"{key.split(':', 1)[1]} ({e['champion']['id']})", current[key]))
        for key, value in constants.items():
            current[key].append((e["generation"], value))
    return lines


def write_plots(run_dir: str | Path, log: list[dict], writer) -> list[Path]:
    """PNG plots of a run's log; `writer(path, bytes)` writes atomically. Returns the paths."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    plots = Path(run_dir) / "plots"
    made = []
    gens = [e["generation"] for e in log if "valid" in e]
    evo = [e for e in log if "valid" in e]

    def save(fig, name):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        writer(plots / name, buf.getvalue())
        made.append(plots / name)

    # score and cost per generation
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    if evo:
        a1.plot(gens, [e["valid"]["champion"] for e in evo], "o-", label="champion")
        a1.plot(gens, [e["valid"]["greedy"] for e in evo], "s--", label="greedy")
        a1.plot(gens, [e["population"]["mean_score"] for e in evo], ":", label="population mean")
        a2.plot(gens, [e["champion"]["cost"] for e in evo], "o-", label="champion")
        a2.plot(gens, [e["population"]["mean_cost"] for e in evo], ":", label="population mean")
    a1.set(xlabel="generation", ylabel="valid score", title="Score per generation")
    a2.set(xlabel="generation", ylabel="model forward tokens per answer",
           title="Cost per generation")
    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if evo:  # no generation yet: no lines to name (a legend of nothing warns)
            ax.legend(loc="best")
    save(fig, "score-cost.png")

    # the last Pareto front
    fig, ax = plt.subplots(figsize=(6, 4))
    if evo:
        pop = evo[-1]["population"]
        ax.scatter(pop["costs"], pop["scores"], s=[6 + 3 * s for s in pop["sizes"]],
                   alpha=0.4, label="population")
        front = sorted(evo[-1]["front"], key=lambda f: f["cost"])
        ax.step([f["cost"] for f in front], [f["score"] for f in front], "r-", where="post",
                alpha=0.5)
        ax.scatter([f["cost"] for f in front], [f["score"] for f in front], color="red",
                   label="Pareto front")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # labels never overlap
    ax.set(xlabel="cost (forward tokens per answer)", ylabel="valid score",
           title=f"Pareto front, generation {gens[-1] if gens else 0} (size: marker)")
    if evo:
        ax.legend(loc="best")
    save(fig, "pareto-front.png")

    # the champion's constants over generations, one line per champion lineage
    fig, ax = plt.subplots(figsize=(9, 4))
    lines = constant_lines(evo)
    for label, pts in lines[:12]:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    ax.set(xlabel="generation", ylabel="value", title="Champion constants")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if lines:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no tunable constants in the champions", ha="center",
                transform=ax.transAxes)
    save(fig, "constants.png")

    # model loss
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [(e["generation"], e["model"]["loss"]) for e in log if e.get("model")]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="LM loss (end of phase)")
        lam = [(e["generation"], e["model"]["program_loss"]) for e in log
               if e.get("model") and e["model"].get("program_loss") is not None]
        if lam:
            ax.plot([p[0] for p in lam], [p[1] for p in lam], "s--", label="program loss")
        ax.legend(loc="best")
    ax.set(xlabel="generation (0 = pre-training)", ylabel="loss", title="Model loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    save(fig, "model-loss.png")
    return made
