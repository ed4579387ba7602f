"""What a run shows a person: bootstrap intervals, plots (PNG) and the text of `show`.

Everything here reads the run directory's own records (log.jsonl, hall-of-fame.scm,
report.json); nothing needs the model.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean and a percentile bootstrap interval of it."""
    vals = [float(v) for v in values]
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


def read_log(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def write_plots(run_dir: str | Path, log: list[dict], writer) -> list[Path]:
    """PNG plots of a run's log; `writer(path, bytes)` writes atomically. Returns the paths."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    a1.legend(loc="best")
    a2.legend(loc="best")
    save(fig, "score-cost.png")

    # the last Pareto front
    fig, ax = plt.subplots(figsize=(5, 4))
    if evo:
        pop = evo[-1]["population"]
        ax.scatter(pop["costs"], pop["scores"], s=[6 + 3 * s for s in pop["sizes"]],
                   alpha=0.4, label="population")
        front = evo[-1]["front"]
        ax.scatter([f["cost"] for f in front], [f["score"] for f in front], color="red",
                   label="Pareto front")
    ax.set(xlabel="cost (forward tokens per answer)", ylabel="valid score",
           title="Pareto front (marker size: program size)")
    ax.legend(loc="best")
    save(fig, "pareto-front.png")

    # the champion's constants over generations
    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[str, list[tuple[int, float]]] = {}
    for e in evo:
        for name, value in e["champion"].get("constants", {}).items():
            series.setdefault(name, []).append((e["generation"], value))
    for name, pts in list(series.items())[:12]:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
    ax.set(xlabel="generation", ylabel="value", title="Champion constants")
    if series:
        ax.legend(loc="best", fontsize=7)
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
    save(fig, "model-loss.png")
    return made
