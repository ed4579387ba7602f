"""`report DIR`: one self-contained HTML page of a run (DESIGN §4, report.html).

No server, no network, no script: tables are HTML, figures are PNG data URIs. The page holds
the per-generation table and curves, the Pareto front, the champion's lineage as a graph,
each hall-of-fame program with its diff against its parent and its ancestors' constants,
sample outputs (the champion beside greedy on valid prompts) and one trace.
"""

from __future__ import annotations

import base64
import difflib
import html
import io
import math
import re

import engine_dsl
from engine_dsl import Definition, RealConst, WeightsConst
from engine_dsl.files import read_file

from .genealogy import Lineage
from .loop import GREEDY
from .report import SCORE_MEANING, one_line, read_log, write_plots
from .views import (
    ancestry,
    model_summary,
    node_program,
    number,
    open_run,
    provenance,
    trace_decoding,
    tuned,
)

SAMPLES = 8  # valid prompts shown with the champion's and greedy's outputs
LINEAGE_NODES = 60  # the lineage graph draws at most this many of the latest ancestors
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: .2em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font: 13px ui-monospace, monospace; } pre { background: #f7f7f7; padding: .6em;
  overflow-x: auto; } img { max-width: 100%; } .meta { color: #666; }
del { background: #fdd; text-decoration: line-through; } ins { background: #dfd;
  text-decoration: none; }
"""


def write_page(path: str, device: str | None = None) -> str:
    """Write `DIR/report.html` (the run's model on `device`, default its own); returns its
    path."""
    run = open_run(path, device)
    rundir = run.dir
    log = read_log(rundir.path)
    hof = read_file(rundir.hall_of_fame) if rundir.hall_of_fame.exists() else ()
    graph = Lineage.read_graphml(rundir.lineage).graph if rundir.lineage.exists() else None
    images: dict[str, bytes] = {}
    write_plots(rundir.path, log, lambda p, data: images.__setitem__(p.name, data))

    cfg = run.cfg
    parts = [f"<h1>Echo Forge run <code>{_e(rundir.path.name)}</code></h1>",
             f"<p class=meta>task {_e(cfg.task.name)}, mode {_e(cfg.run.mode)}, seed "
             f"{cfg.run.seed}; {len(log)} of {cfg.run.generations + 1} generations done "
             f"(0 = pre-training); model {_e(model_summary(cfg))}; population "
             f"{cfg.evolution.population_size}.<br>"
             f"score: {_e(SCORE_MEANING[run.task.kind])}</p>"]
    parts += _generations(log, images, cfg.loop.valid_prompts)
    parts += _final_report(rundir)
    if hof:
        parts += _hall_of_fame(hof, graph, run)
    if hof and graph is not None and hof[0].name in graph:
        parts += [f"<h2>Lineage of the champion {_e(hof[0].name)}</h2>",
                  _img(_lineage_png(graph, hof[0].name), "lineage graph")]
    if hof:
        parts += _samples(run, hof[0])
        prompt = run._examples("valid")[0].input
        traced = trace_decoding(run.model, run.tokenizer, hof[0], prompt, seed=cfg.run.seed,
                                max_new_tokens=run.answer_cap(), breakers=run.breakers)
        parts += [f"<h2>A trace: the champion on {_e(repr(prompt))}</h2>",
                  f"<pre>{_e(traced)}</pre>"]
    page = ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>Echo Forge run {_e(rundir.path.name)}</title><style>{STYLE}</style>"
            "</head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    target = rundir.path / "report.html"
    rundir.write(target, page)
    return str(target)


def _e(x) -> str:
    return html.escape(str(x))


def _img(data: bytes, alt: str) -> str:
    return (f'<img alt="{_e(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(data).decode("ascii")}">')


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """An HTML table; cells are already escaped HTML."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td class=n>{c}</td>" if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _generations(log: list[dict], images: dict, prompts: int) -> list[str]:
    rows = []
    for e in log:
        loss = e["model"]["loss"] if e.get("model") else math.nan
        c = e["champion"]
        rows.append([str(e["generation"]), f"{e['valid']['champion']:.3f}",
                     f"{e['valid']['greedy']:.3f}", f"{c['cost']:.1f}", str(c["size"]),
                     f"{loss:.4f}", tuned(e), f"<code>{_e(one_line(c['source'], 90))}</code>"])
    return [f"<h2>Generations</h2><p class=meta>valid split, {prompts} prompts, each scored on "
            "that generation's model; tuned: constant tunings kept/undone by the guard</p>",
            _table(["gen", "champion", "greedy", "cost", "size", "model loss", "tuned",
                    "champion program"], rows, {0, 1, 2, 3, 4, 5}),
            _img(images["score-cost.png"], "score and cost per generation"),
            _img(images["model-loss.png"], "model loss"),
            "<h2>Pareto front</h2>", _img(images["pareto-front.png"], "Pareto front"),
            "<h2>Champion constants</h2>", _img(images["constants.png"], "constants")]


def _final_report(rundir) -> list[str]:
    rep = rundir.read_report()
    if rep is None:
        return []
    rows = []
    for name, splits in rep["programs"].items():
        rows.append([_e(name)] + [f"{splits[s]['score']:.3f} [{splits[s]['ci95'][0]:.3f}, "
                                  f"{splits[s]['ci95'][1]:.3f}] (n = {splits[s]['n']})"
                                  for s in ("valid", "test")])
    return ["<h2>Final report</h2><p class=meta>re-scored on the final model with the last "
            "generation's draws; score [95% bootstrap interval]</p>",
            _table(["program", "valid", "test"], rows, {1, 2})]


def _hall_of_fame(hof, graph, run) -> list[str]:
    out = ["<h2>Hall of fame</h2><p class=meta>the Pareto front (score up, cost down, size "
           "down), best first; each program against its first parent, and the constants "
           "along its line of first parents (scores: valid, in each one's own generation)"
           "</p>"]
    for d in hof:
        info = provenance(d)
        out.append(f"<h3><code>{_e(d.name)}</code>: score {number(info.get('score'), '.3f')}"
                   f", cost {number(info.get('cost'), '.1f')}, size {engine_dsl.size(d.body)}, "
                   f"{_e(info.get('operator', ''))}</h3>"
                   f"<pre>{_e(engine_dsl.to_scheme([Definition(d.name, d.body)]))}</pre>")
        if graph is None or d.name not in graph:
            continue
        parents = sorted(graph.predecessors(d.name))
        if parents:
            before = one_line(node_program(graph.nodes[parents[0]]), 10**6)
            after = one_line(d.body, 10**6)
            out.append(f"<p>against parent <code>{_e(parents[0])}</code>: "
                       f"<code>{token_diff(before, after)}</code></p>")
        rows = []
        for n in reversed(first_parents(graph, d.name)):
            program = node_program(graph.nodes[n])
            if isinstance(program, str):
                continue
            values = constants_of(program)
            if values:
                score = graph.nodes[n].get("score")
                rows.append([str(graph.nodes[n].get("generation", "?")), _e(n),
                             "" if score is None else f"{score:.3f}", _e(values)])
        if rows:
            out.append(_table(["gen", "program", "score", "constants"], rows, {0, 2}))
    return out


def first_parents(graph, ident: str) -> list[str]:
    """`ident`, its first parent, that one's first parent, ... (of a crossover's two
    parents, the first by id: the lineage graph keeps no order)."""
    chain = [ident]
    while parents := list(graph.predecessors(chain[-1])):
        chain.append(sorted(parents)[0] if len(parents) > 1 else parents[0])
    return chain


def constants_of(expr) -> str:
    """'temperature 0.72, top-p 0.9' for the constants of a program, in prefix order."""
    out, stack = [], [(expr, "")]
    while stack:
        node, owner = stack.pop()
        if isinstance(node, RealConst):
            out.append(f"{owner} {node.value:.4g}" + (" (fixed)" if node.fixed else ""))
        elif isinstance(node, WeightsConst):
            out.append(f"{owner} #({' '.join(f'{v:.3g}' for v in node.values)})")
        elif hasattr(node, "args"):
            stack.extend((a, node.op) for a in reversed(node.args))
    return ", ".join(out)


def token_diff(before: str, after: str) -> str:
    """HTML of a word-level diff of two one-line programs (<del> removed, <ins> added)."""
    a, b = (re.findall(r"[()]|[^\s()]+", s) for s in (before, after))
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            out.append(f"<del>{_e(' '.join(a[i1:i2]))}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{_e(' '.join(b[j1:j2]))}</ins>")
        if op == "equal":
            out.append(_e(" ".join(a[i1:i2])))
    return " ".join(out).replace("( ", "(").replace(" )", ")")


def _lineage_png(graph, ident: str) -> bytes:
    """The champion's ancestry drawn by generation (left to right), coloured by score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = ancestry(graph, ident)[-LINEAGE_NODES:]
    by_gen: dict[int, list[str]] = {}
    for n in nodes:
        by_gen.setdefault(int(graph.nodes[n].get("generation", 0)), []).append(n)
    pos = {n: (g, i - (len(ns) - 1) / 2) for g, ns in by_gen.items() for i, n in enumerate(ns)}
    width = max(4.0, 1.6 * len(by_gen))
    height = max(2.5, 0.8 * max(len(ns) for ns in by_gen.values()))
    fig, ax = plt.subplots(figsize=(width, height))
    for n in nodes:
        for p in graph.predecessors(n):
            if p in pos:
                ax.annotate("", pos[n], pos[p], arrowprops={"arrowstyle": "->", "color": "#888"})
    scores = [graph.nodes[n].get("score", math.nan) for n in nodes]
    points = ax.scatter([pos[n][0] for n in nodes], [pos[n][1] for n in nodes], c=scores,
                        cmap="viridis", s=300, zorder=3, edgecolors="black")
    for n in nodes:
        op = graph.nodes[n].get("operator", "")
        ax.annotate(f"{n}\n{op}", pos[n], textcoords="offset points", xytext=(0, 14),
                    ha="center", fontsize=7)
    fig.colorbar(points, ax=ax, label="valid score (own generation)")
    ax.set_xticks(sorted(by_gen))
    ax.set(xlabel="generation", yticks=[], title=f"ancestry of {ident}" + (
        f" (the latest {LINEAGE_NODES} of its ancestry)" if len(nodes) == LINEAGE_NODES else ""))
    ax.margins(0.15, 0.4)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _samples(run, champion) -> list[str]:
    """The champion beside greedy on the first valid prompts (same draws as its score)."""
    examples = run._examples("valid")[:SAMPLES]
    tok = run.tokenizer
    decoded = run.decode([champion.body, GREEDY], examples, run.evaluation_seed())

    def cell(text: str) -> str:
        """The whole text and, where the task extracts a final answer from it, that answer."""
        final = run.task.extract(text) if run.task.kind == "answer" else text
        shown = f"<code>{_e(repr(text))}</code>"
        return shown if final == text else f"{shown} &rarr; <code>{_e(repr(final))}</code>"

    rows = [[f"<code>{_e(repr(e.input))}</code>", cell(e.output), cell(tok.decode(a.tokens)),
             cell(tok.decode(g.tokens))] for e, a, g in zip(examples, *decoded, strict=True)]
    what = "continuations" if run.task.kind == "text" else "answers"
    return [f"<h2>Sample {what}</h2><p class=meta>the champion <code>{_e(champion.name)}</code> "
            f"and greedy on the first {len(rows)} valid prompts, side by side"
            + (" (the draws of its score)" if run.task.kind == "answer" else
               " (prompts and human continuations from held-out works)") + "</p>",
            _table(["prompt", "reference", "champion", "greedy"], rows)]

