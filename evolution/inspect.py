"""Reading a run: `show`, `lineage`, `eval` and `trace` (DESIGN §5)."""

from __future__ import annotations

import json
import math

import engine_dsl
from engine_dsl import Apply, Definition, Expr, Type
from engine_dsl.files import read_file
from engine_dsl.printer import expr_to_scheme

from .genealogy import Lineage
from .report import read_log
from .rundir import RunDir, RunError
from .settings import resolve


def open_run(path: str):
    """A CoEvolution opened read-only on run `path` (model, task, config)."""
    from .loop import CoEvolution

    rundir = RunDir(path)
    rundir.require_run()
    run = CoEvolution(resolve(str(rundir.config)), rundir)
    run.open()
    return run


def program_defs(path: str, run) -> list[Definition]:
    """The definitions of a program file, fitted to the run's model."""
    from .loop import fit_to_model

    defs = read_file(path, run.cfg.evolution.limits)
    return [fit_to_model(d, run.model.n_layer, run.model.n_head) for d in defs]


# --- show ----------------------------------------------------------------------------------


def show(path: str, top: int = 5) -> str:
    rundir = RunDir(path)
    rundir.require_run()
    cfg = resolve(str(rundir.config))
    log = read_log(rundir.path)
    lines = [f"run {rundir.path}: task {cfg.task.name}, mode {cfg.run.mode}, seed "
             f"{cfg.run.seed}, {len(log)} of {cfg.run.generations + 1} generations done "
             f"(0 = pre-training)"]
    lines.append(f"model: {cfg.model.n_layer} layers x {cfg.model.n_head} heads, width "
                 f"{cfg.model.n_embd}; population {cfg.evolution.population_size}")
    if log:
        lines.append("")
        lines.append(" gen  champion  greedy   cost  size  model loss  champion program")
        for e in log:
            loss = e["model"]["loss"] if e.get("model") else math.nan
            src = e["champion"]["source"]
            src = src if len(src) <= 60 else src[:57] + "..."
            lines.append(f"{e['generation']:>4}  {e['valid']['champion']:>8.3f}  "
                         f"{e['valid']['greedy']:>6.3f}  {e['champion']['cost']:>5.1f}  "
                         f"{e['champion']['size']:>4}  {loss:>10.4f}  {src}")
    if rundir.hall_of_fame.exists():
        defs = read_file(rundir.hall_of_fame)
        lines += ["", f"hall of fame ({len(defs)} programs, best first; "
                      f"{rundir.hall_of_fame}):"]
        for d in defs[:top]:
            info = dict(c.lstrip("; ").split(": ", 1) for c in d.comments if ": " in c)
            lines.append(f"  {d.name:<10} score {info.get('score', '?'):>8}  cost "
                         f"{info.get('cost', '?'):>6}  size {info.get('size', '?'):>3}  "
                         f"{expr_to_scheme(d.body)}")
    if rundir.report.exists():
        rep = json.loads(rundir.report.read_text(encoding="utf-8"))
        lines += ["", "final report (score [95% CI]):",
                  f"  {'program':<30} {'valid':>22} {'test':>22}"]
        for name, splits in rep["programs"].items():
            cells = [f"{splits[s]['score']:.3f} [{splits[s]['ci95'][0]:.3f}, "
                     f"{splits[s]['ci95'][1]:.3f}]" for s in ("valid", "test")]
            lines.append(f"  {name:<30} {cells[0]:>22} {cells[1]:>22}")
    return "\n".join(lines)


# --- lineage -------------------------------------------------------------------------------


def lineage(path: str, ident: str | None = None) -> str:
    """The ancestry of `ident` (default: the current champion), oldest first: each
    ancestor with its operator and the score change from its best parent."""
    rundir = RunDir(path)
    rundir.require_run()
    if not rundir.lineage.exists():
        raise RunError(f"{rundir.path}: no lineage yet")
    graph = Lineage.read_graphml(rundir.lineage).graph
    if ident is None:
        log = read_log(rundir.path)
        if not log:
            raise RunError(f"{rundir.path}: no generation finished yet")
        ident = log[-1]["champion"]["id"]
    if ident not in graph:
        import difflib

        close = difflib.get_close_matches(ident, list(graph), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RunError(f"{rundir.path}: no individual '{ident}' in the lineage{hint}")
    import networkx as nx

    sub = graph.subgraph(nx.ancestors(graph, ident) | {ident})
    order = sorted(nx.topological_sort(sub),
                   key=lambda n: (int(graph.nodes[n].get("generation", 0)), n))
    lines = [f"ancestry of {ident} ({len(order)} individuals, oldest first):"]
    for n in order:
        a = graph.nodes[n]
        parents = sorted(graph.predecessors(n))
        score = a.get("score")
        parent_scores = [graph.nodes[p].get("score") for p in parents]
        parent_scores = [s for s in parent_scores if s is not None]
        delta = ""
        if score is not None and parent_scores:
            delta = f" ({score - max(parent_scores):+.3f} vs best parent)"
        shown = f"{score:.3f}" if score is not None else "-"
        lines.append(f"  {n:<10} gen {a.get('generation', '?'):>3}  "
                     f"{a.get('operator', '?'):<22} from {', '.join(parents) or '-':<16} "
                     f"score {shown}{delta}")
        lines.append(f"             {a.get('program', '')}")
    return "\n".join(lines)


# --- eval ----------------------------------------------------------------------------------


def evaluate(program_path: str, run_path: str, split: str = "valid") -> dict:
    """JSON-ready scores of every definition of a program file on a run's split, beside
    the greedy baseline on the same prompts."""
    run = open_run(run_path)
    defs = program_defs(program_path, run)
    programs = {d.name: d.body for d in defs}
    programs.setdefault("greedy", Apply("greedy", (Apply("logits"),)))
    results = run.score(programs, split)
    return {"run": str(run.dir.path), "task": run.task.name, "split": split,
            "programs": results}


# --- trace ---------------------------------------------------------------------------------


def trace(program_path: str, run_path: str, prompt: str, top: int = 5,
          max_new_tokens: int | None = None) -> str:
    """Step by step: every Logits node's top tokens, every measure's value, the branch each
    `if` takes, and the token chosen (first definition of the file; first sample)."""
    import torch

    from engine_dsl import semantics as sem
    from engine_dsl.decoders import plan as decoder_plan
    from engine_dsl.decoders import uniforms

    run = open_run(run_path)
    d = program_defs(program_path, run)[0]
    tok, model = run.tokenizer, run.model
    p = decoder_plan(d.body)
    nodes = _evaluation_order(p.logits_expr)
    modules = {id(n): engine_dsl.compile_expr(n) for n in nodes}
    ids = tok.encode(prompt, bos=True)
    limit = max_new_tokens or run.answer_cap()
    lines = [f"trace of {d.name}: {expr_to_scheme(d.body)}",
             f"prompt {prompt!r}; {p.base} over the Logits program"
             + (f"; {' / '.join(f'{k} {n}' for k, n in p.layers)}: first sample shown"
                if p.layers else "")]
    answer = []
    with torch.no_grad():
        for step in range(limit):
            x = torch.tensor([ids])
            out = model.forward_step(x)

            def gated(gates, x=x):
                return model.forward_step(x, head_gates=gates).logits[:, -1]

            sources = dict(logits=out.logits[:, -1], history=x,
                           residuals=[r[:, -1] for r in out.residuals], lens=model.lens,
                           gated=gated, n_layer=model.n_layer, n_head=model.n_head)
            lines.append(f"step {step + 1}: text so far {tok.decode(answer)!r}")
            final = None
            for n in nodes:
                value = modules[id(n)](mode="exact", **sources)
                kind = engine_dsl.type_of(n)
                label = _short(n)
                if kind is Type.LOGITS:
                    lines.append(f"  {label:<40} {_top_tokens(value[0], tok, top)}")
                    if n is nodes[-1]:
                        final = value
                elif kind is Type.REAL:
                    lines.append(f"  {label:<40} = {float(value[0]):.4f}")
                elif kind is Type.BOOL:
                    taken = "then" if bool(value[0]) else "else"
                    lines.append(f"  {label:<40} = {bool(value[0])} -> {taken} branch")
            if p.base == "greedy":
                nxt = int(final[0].argmax())
            else:  # the draw `decode` makes for this prompt's first sample
                u = uniforms(run.cfg.run.seed, torch.tensor([0]), torch.tensor([0]), step)
                nxt = int(sem.sample_exact(None, final[:1], u)[0])
            probs = torch.softmax(final[0].double(), -1)
            ent = max(0.0, float(sem.entropy(None, final[:1].double())[0]))  # never "-0.000"
            lines.append(f"  chosen {_show_token(nxt, tok)} (p = {float(probs[nxt]):.3f}, "
                         f"entropy {ent:.3f})")
            if nxt == tok.eos_id:
                break
            answer.append(nxt)
            ids.append(nxt)
    lines.append(f"answer: {tok.decode(answer)!r}")
    return "\n".join(lines)


def _evaluation_order(e: Expr) -> list[Apply]:
    """Distinct sub-expressions, arguments before the forms that use them (root last)."""
    seen, out = set(), []
    stack = [(e, False)]
    while stack:
        node, expanded = stack.pop()
        if not isinstance(node, Apply):
            continue
        if expanded:
            if node not in seen:
                seen.add(node)
                out.append(node)
            continue
        stack.append((node, True))
        stack.extend((a, False) for a in reversed(node.args))
    return out


def _short(n: Expr) -> str:
    s = expr_to_scheme(n)
    return s if len(s) <= 40 else s[:37] + "..."


def _show_token(t: int, tok) -> str:
    if t == tok.eos_id:
        return "<eos>"
    if t == tok.bos_id:
        return "<bos>"
    if t == tok.pad_id:
        return "<pad>"
    return repr(tok.decode([t]))


def _top_tokens(row, tok, k: int) -> str:
    import torch

    probs = torch.softmax(row.double(), -1)
    kept = int(torch.isfinite(row).sum())
    vals, idx = probs.topk(min(k, probs.numel()))
    shown = " ".join(f"{_show_token(int(i), tok)}:{float(v):.2f}"
                     for v, i in zip(vals, idx, strict=True) if v > 0)
    return f"[{kept} kept] {shown}"
