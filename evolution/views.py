"""Reading a run: `show`, `lineage`, `eval`, `compare` and `trace` (DESIGN §5)."""

from __future__ import annotations

import json
import math

import engine_dsl
from engine_dsl import Apply, Definition, DslError, Expr, Type
from engine_dsl.files import read_file
from engine_dsl.registry import baseline
from neural.tasks import task_kind

from .genealogy import Lineage
from .report import SCORE_MEANING, bootstrap_ci, one_line, read_log, readable
from .rundir import RunDir, RunError
from .settings import recorded_config


def open_run(path: str, device: str | None = None):
    """A CoEvolution opened read-only on run `path` (model, task, config), its model on
    `device` (default: the run's own)."""
    from .loop import CoEvolution

    return CoEvolution.open(RunDir(path), device)


def model_summary(cfg) -> str:
    """The model of a run in a few words."""
    if cfg.hf.path:
        return f"hf:{cfg.hf.path} ({cfg.hf.train_mode})"
    m = cfg.model
    return f"{m.n_layer} layers x {m.n_head} heads, width {m.n_embd}"


def program_defs(path: str, run, name: str | None = None) -> list[Definition]:
    """The definitions of a program file (only `name` when given), fitted to the run's model."""
    from .loop import fit_to_model, unavailable_inputs

    defs = pick(read_file(path, run.cfg.evolution.limits), name, path)
    return [fit_to_model(d, run.model.n_layer, run.model.n_head, unavailable_inputs(run.model))
            for d in defs]


def pick(defs, name: str | None, path: str) -> list[Definition]:
    """`defs`, or only the one called `name` (`--def NAME`); DslError naming the others."""
    if name is None:
        return list(defs)
    chosen = [d for d in defs if d.name == name]
    if not chosen:
        raise DslError(f"no definition '{name}' (the file defines "
                       f"{', '.join(d.name for d in defs)})", str(path))
    return chosen


def one_definition(path: str, run, name: str | None) -> Definition:
    """The definition a one-program command runs: `name`, or the file's only one."""
    defs = program_defs(path, run, name)
    if len(defs) > 1:
        raise DslError(f"the file holds {len(defs)} definitions "
                       f"({', '.join(d.name for d in defs)}); choose one with --def NAME",
                       str(path))
    return defs[0]


def _scored_on(run, split: str) -> str:
    n = len(run._examples(split))
    return (f"{split} split, {n} prompt{'s' if n != 1 else ''}, model of generation "
            f"{run.next_generation - 1}")


# --- show ----------------------------------------------------------------------------------


def show(path: str, top: int = 5) -> str:
    rundir = RunDir(path)
    rundir.require_run()
    cfg = recorded_config(rundir.config)
    log = read_log(rundir.path)
    kind = task_kind(cfg.task.name)
    lines = [f"run {rundir.path}: task {cfg.task.name}, mode {cfg.run.mode}, seed "
             f"{cfg.run.seed}, {len(log)} of {cfg.run.generations + 1} generations done "
             f"(0 = pre-training)",
             f"model: {model_summary(cfg)}; device {cfg.run.device}; population "
             f"{cfg.evolution.population_size}",
             f"score: {SCORE_MEANING[kind]}"]
    if log:
        lines += ["", f"per generation (valid split, {cfg.loop.valid_prompts} prompts, each "
                      "scored on that generation's model; tuned: kept/undone):",
                  " gen  champion  greedy   cost  size  model loss  tuned  champion program"]
        for e in log:
            loss = e["model"]["loss"] if e.get("model") else math.nan
            lines.append(f"{e['generation']:>4}  {e['valid']['champion']:>8.3f}  "
                         f"{e['valid']['greedy']:>6.3f}  {e['champion']['cost']:>5.1f}  "
                         f"{e['champion']['size']:>4}  {loss:>10.4f}  {tuned(e):>5}  "
                         f"{one_line(e['champion']['source'], 60)}")
    if rundir.hall_of_fame.exists():
        defs = read_file(rundir.hall_of_fame)
        lines += ["", f"hall of fame ({len(defs)} programs, best first; {rundir.hall_of_fame}; "
                      f"valid score on the model of generation {len(log) - 1}):"]
        for d in defs[:top]:
            info = provenance(d)
            lines.append(f"  {d.name:<10} score {number(info.get('score'), '.3f'):>6}  cost "
                         f"{number(info.get('cost'), '.1f'):>5}  size "
                         f"{engine_dsl.size(d.body):>3}  {one_line(d.body, 70)}")
    if kind == "text" and rundir.model.exists() and rundir.hall_of_fame.exists():
        lines += ["", *side_by_side(open_run(path), read_file(rundir.hall_of_fame)[0])]
    rep = rundir.read_report()
    if rep is not None:
        lines += ["", f"final report (re-scored on the final model with the last generation's "
                      f"draws; score [95% CI], {cfg.loop.valid_prompts} valid and "
                      f"{cfg.loop.test_prompts} test prompts):",
                  f"  {'program':<30} {'valid':>22} {'test':>22}"]
        for name, splits in rep["programs"].items():
            cells = [f"{splits[s]['score']:.3f} [{splits[s]['ci95'][0]:.3f}, "
                     f"{splits[s]['ci95'][1]:.3f}]" for s in ("valid", "test")]
            lines.append(f"  {name:<30} {cells[0]:>22} {cells[1]:>22}")
        lines += report_lines(rep)
        samples = rep.get("samples") or []
        if samples:
            lines += ["", f"first {len(samples)} test answers (whole text -> final answer; "
                          "* = the reference's final answer):"]
            for x in samples:
                lines.append(f"  {x['prompt']!r} reference {x['reference']!r}")
                for who in ("champion", "greedy"):
                    answer = x[f"{who}_answer"]
                    mark = "*" if answer is not None and answer == x["reference_answer"] else " "
                    lines.append(f"    {who:<9} {x[who]!r} -> {answer!r} {mark}")
    return "\n".join(lines)


def report_lines(rep: dict) -> list[str]:
    """The final report's paired comparison with greedy and the champion's selection."""
    lines = []
    cg = rep.get("champion_vs_greedy")
    if cg is not None:
        lines.append(f"champion vs greedy on test: {cg['diff']:+.3f} [{cg['low']:+.3f}, "
                     f"{cg['high']:+.3f}]")
    cr = rep.get("champion_vs_reference")
    if cr is not None:
        lines.append(f"champion vs {cr['reference']} on test ({cr['objective']}): "
                     f"{cr['diff']:+.3f} [{cr['low']:+.3f}, {cr['high']:+.3f}]")
    sel = rep.get("selection")
    if sel is not None and sel.get("valid") is not None:
        lines.append(f"champion chosen by the {sel['rule']} rule among {sel['candidates']} "
                     f"programs (final front, seeds and {sel.get('reference', 'greedy')}) on "
                     f"{sel['prompts']} fresh valid prompts{_race(sel)}: valid "
                     f"{sel['valid']:.3f}, test "
                     f"{sel['test']:.3f}, valid-to-test gap {sel['gap']:+.3f}")
    return lines


def _race(selection: dict) -> str:
    """The second stage of a text selection, as report lines say it ("" where none ran)."""
    race = selection.get("race")
    return (f", then {race['programs']} of them on {race['prompts']} more" if race else "")


SHOW_WIDTH = 30  # characters per column of `side_by_side`


def side_by_side(run, champion: Definition) -> list[str]:
    """The first held-out (valid) prompt and its continuations by greedy, nucleus 0.95 and
    the champion, in columns (the draws of the last generation's scoring)."""
    import textwrap

    from .text_scoring import NUCLEUS_95

    example = run._examples("valid")[0]
    programs = {"greedy": baseline(), "nucleus 0.95": engine_dsl.read_expr(NUCLEUS_95,
                                                                           Type.DECODER),
                f"champion {champion.name}": champion.body}
    tok = run.tokenizer
    decoded = run.decode(list(programs.values()), [example], run.evaluation_seed())
    columns = {name: tok.decode(ans[0].tokens) for name, ans in zip(programs, decoded,
                                                                     strict=True)}
    columns["human"] = example.output

    def wrap(text: str) -> list[str]:
        return [piece for line in text.split("\n")
                for piece in (textwrap.wrap(line, SHOW_WIDTH, drop_whitespace=False) or [""])]

    cells = {name: wrap(text) for name, text in columns.items()}
    height = max(len(c) for c in cells.values())
    out = [f"one held-out prompt (valid split), continued by each (the same draws): "
           f"{example.input!r}",
           "  " + " | ".join(f"{name:<{SHOW_WIDTH}}" for name in cells)]
    for k in range(height):
        out.append("  " + " | ".join(f"{(c[k] if k < len(c) else ''):<{SHOW_WIDTH}}"
                                     for c in cells.values()))
    return out


def number(text: str | None, spec: str) -> str:
    """A number from a comment block, formatted; '?' where it is missing or not a number."""
    try:
        return format(float(text), spec)
    except (TypeError, ValueError):
        return "?"


def provenance(d: Definition) -> dict[str, str]:
    """The `key: value` lines of a definition's comment block."""
    return dict(c.lstrip("; ").split(": ", 1) for c in d.comments if ": " in c)


def tuned(entry: dict) -> str:
    """'kept/undone' tunings of a log entry ('-' where none were made)."""
    t = entry.get("tuning")
    return f"{t['kept']}/{t['undone']}" if t else "-"


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
    order = ancestry(graph, ident)
    lines = [f"ancestry of {ident} ({len(order)} individuals, oldest first; score: valid, "
             "taken in the individual's own generation, on that generation's model):"]
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
        lines.append(f"             {one_line(node_program(a), 100)}")
    return "\n".join(lines)


def ancestry(graph, ident: str) -> list[str]:
    """`ident` and its ancestors, oldest generation first."""
    import networkx as nx

    sub = graph.subgraph(nx.ancestors(graph, ident) | {ident})
    return sorted(nx.topological_sort(sub),
                  key=lambda n: (int(graph.nodes[n].get("generation", 0)), n))


def node_program(attrs: dict):
    """A lineage node's program as written for reading (its text where it does not read)."""
    text = attrs.get("program", "")
    try:
        return readable(engine_dsl.read_expr(text, Type.DECODER))
    except DslError:
        return text


# --- eval and compare ----------------------------------------------------------------------


def evaluate(program_path: str, run_path: str, split: str = "valid",
             name: str | None = None, device: str | None = None) -> dict:
    """JSON-ready scores of the definitions of a program file (or `name`) on a run's split,
    beside the greedy baseline on the same prompts, with the same draws as the hall of fame."""
    run = open_run(run_path, device)
    defs = program_defs(program_path, run, name)
    programs = {d.name: d.body for d in defs}
    programs.setdefault("greedy", baseline())
    results = run.score(programs, split)
    return {"run": str(run.dir.path), "task": run.task.name, "split": split,
            "scored_on": _scored_on(run, split), "score": SCORE_MEANING[run.task.kind],
            "programs": results}


def compare(a: str, b: str, run_path: str, split: str = "valid", rows: int = 10,
            device: str | None = None) -> str:
    """Two programs (`FILE` or `FILE:NAME`) on the same prompts with the same draws: each
    score, the paired difference with a 95% interval, and the prompts where they differ."""
    run = open_run(run_path, device)
    (da, db) = (_program_spec(s, run) for s in (a, b))
    scores, costs, answers = run.per_item(split, [da.body, db.body])
    seed, resamples = run.cfg.run.seed, run.cfg.loop.bootstrap
    diff = [x - y for x, y in zip(scores[0], scores[1], strict=True)]
    mean, lo, hi = bootstrap_ci(diff, resamples, seed=seed)
    unit = "prompts" if run.task.kind == "answer" else "tokens"
    lines = [f"compare on the {_scored_on(run, split)}; the same draws for both "
             f"(common random numbers); score: {SCORE_MEANING[run.task.kind]}"]
    for label, spec, d, items, cost in zip("AB", (a, b), (da, db), scores, costs,
                                           strict=True):
        m, l, h = bootstrap_ci(items, resamples, seed=seed)
        lines.append(f"  {label}  {spec}: {m:.3f} [{l:.3f}, {h:.3f}]  cost {cost:.1f}  "
                     f"{one_line(d.body, 60)}")
    lines.append(f"  A - B = {mean:+.3f}, 95% interval [{lo:+.3f}, {hi:+.3f}] (paired "
                 f"bootstrap over {len(diff)} {unit})")
    if answers[0] is None:
        return "\n".join(lines)
    examples = run._examples(split)
    differ = [i for i, (x, y) in enumerate(zip(*answers, strict=True)) if x != y]
    lines.append(f"answers differ on {len(differ)} of {len(examples)} prompts"
                 + (f" (first {rows} shown):" if len(differ) > rows else
                    (":" if differ else ".")))
    if differ:
        lines.append(f"  {'prompt':<20} {'reference':<12} {'A':<14} {'B':<14}")
    for i in differ[:rows]:
        e = examples[i]
        marks = ["*" if run.task.is_correct(ans[i], e.output) else " " for ans in answers]
        lines.append(f"  {e.input!r:<20} {e.output!r:<12} {answers[0][i]!r:<13}{marks[0]} "
                     f"{answers[1][i]!r:<13}{marks[1]}")
    if differ:
        lines.append("  (* = the reference's final answer)")
    return "\n".join(lines)


def _program_spec(spec: str, run) -> Definition:
    """`FILE` (its only definition) or `FILE:NAME`."""
    from pathlib import Path

    path, name = spec, None
    if not Path(spec).exists() and ":" in spec:
        path, name = spec.rsplit(":", 1)
        if not path:
            raise RunError(f"'{spec}': expected FILE or FILE:NAME, found no FILE before ':'")
    return one_definition(path, run, name)


# --- config --------------------------------------------------------------------------------


def config_listing() -> str:
    """Every setting as `key = default  # meaning`, by section: the comment on its field."""
    import dataclasses

    from .loop import DERIVED
    from .settings import TEXT_DEFAULTS, RunConfig

    lines = ["# every setting, its default and its meaning; set one with --set SECTION.KEY=VALUE",
             "# or in a --config TOML file"]

    def section(name: str, obj) -> None:
        lines.extend(["", f"[{name}]"])
        meaning = field_comments(type(obj))
        nested = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            key = f"{name}.{f.name}"
            if dataclasses.is_dataclass(value):
                nested.append((key, value))
            elif key in DERIVED:
                lines.append(f"# {f.name}: set by the run: {DERIVED[key]}")
            else:
                shown = (f"# {f.name} unset by default" if value is None
                         else f"{f.name} = {_toml_value(value)}")
                lines.append(f"{shown:<40}  # {meaning.get(f.name, '')}")
        for key, value in nested:
            section(key, value)

    defaults = RunConfig()
    for f in dataclasses.fields(defaults):
        section(f.name, getattr(defaults, f.name))
    text = ", ".join(f"{part}.{k} = {_toml_value(v)}"
                     for part, values in TEXT_DEFAULTS.items() for k, v in values.items())
    lines.extend(["", f"# text tasks (shakespeare, text:PATH) start from other defaults: {text}"])
    return "\n".join(lines)


def _toml_value(v) -> str:
    """A TOML value on one line."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(map(_toml_value, v)) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def field_comments(cls) -> dict[str, str]:
    """{field: the comment at the end of its line, or on the line above} in `cls`'s source."""
    import inspect as pyinspect
    import io
    import re
    import textwrap
    import tokenize

    src = textwrap.dedent(pyinspect.getsource(cls))
    out, above = {}, ""
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            m = re.match(r"\s+(\w+)\s*:", tok.line)
            if m and tok.line.strip() != tok.string:
                out[m.group(1)] = text
            else:
                above = text
        elif tok.type == tokenize.NAME and tok.start[1] == 4 and above:
            out.setdefault(tok.string, above)
            above = ""
    return out


# --- trace ---------------------------------------------------------------------------------


def trace(program_path: str, run_path: str, prompt: str, top: int = 5,
          max_new_tokens: int | None = None, name: str | None = None,
          device: str | None = None) -> str:
    """`trace_decoding` of definition `name` (or the file's only one) on a run's model."""
    run = open_run(run_path, device)
    d = one_definition(program_path, run, name)
    return trace_decoding(run.model, run.tokenizer, d, prompt, seed=run.cfg.run.seed,
                          max_new_tokens=max_new_tokens or run.answer_cap(), top=top,
                          breakers=run.breakers, extract=run.task.extract)


def trace_decoding(model, tok, d: Definition, prompt: str, *, seed: int, max_new_tokens: int,
                   top: int = 5, breakers=None, extract=None) -> str:
    """Step by step: every Logits node's top tokens, every measure's value, the branch each
    `if` takes, and the token chosen (first sample). The steps are `engine_dsl.decode`'s own
    (its observer sees the sources each step gave the program and the token its chooser
    picked), so what is shown is what decoding did. `extract(text)`: the task's final-answer
    rule; the last line gives the whole answer and, where it differs, the final answer."""
    import torch

    from engine_dsl.decoders import decode
    from engine_dsl.decoders import plan as decoder_plan

    p = decoder_plan(d.body)
    nodes = _evaluation_order(p.logits_expr)
    unfused = engine_dsl.compile_expr(p.logits_expr, fuse=False)  # every node's own value
    ids = tok.encode(prompt, bos=True)
    # the answer's last token is never fed back: a decode reads prompt + answer - 1 positions
    # (the run's own check, `CoEvolution._check_task`, allows as much)
    if len(ids) + max_new_tokens - 1 > model.config.block_size:
        raise RunError(f"the prompt ({len(ids)} tokens) and {max_new_tokens} answer tokens "
                       f"exceed the model's block size of {model.config.block_size}; shorten "
                       "the prompt")
    lines = [f"trace of {d.name}: {one_line(d.body, 100)}",
             f"prompt {prompt!r}; {p.chooser.name} over the Logits program"
             + (f"; {' / '.join(f'{a.name} {n}' for a, n in p.layers)}: first sample shown"
                if p.layers else "")]
    answer: list[int] = []

    def observe(t, q, rows, src, y, chosen):
        if int(rows[0]) != 0:  # only the first sample of the prompt
            return
        lines.append(f"step {t + 1}: text so far {tok.decode(answer)!r}")
        values = unfused.evaluate_nodes(src, nodes)
        for n in nodes:
            value = values[n]
            kind = engine_dsl.type_of(n)
            label = _short(n)
            if kind is Type.LOGITS:
                lines.append(f"  {label:<40} {_top_tokens(value[0], tok, top)}")
            elif kind is Type.REAL:
                lines.append(f"  {label:<40} = {float(value[0]):.4f}")
            elif kind is Type.BOOL:
                taken = "then" if bool(value[0]) else "else"
                lines.append(f"  {label:<40} = {bool(value[0])} -> {taken} branch")
        final = y[:1].double()
        nxt = int(chosen[0])
        probs = torch.softmax(final[0], -1)
        ent = -float((probs * torch.log_softmax(final[0], -1)).nan_to_num().sum())
        lines.append(f"  chosen {_show_token(nxt, tok)} (p = {float(probs[nxt]):.3f}, "
                     f"entropy {max(0.0, ent):.3f})")  # never "-0.000"
        if nxt != tok.eos_id:
            answer.append(nxt)

    decode(model, p, [ids], max_new_tokens=max_new_tokens, stop_token=tok.eos_id, seed=seed,
           observe=observe, breakers=breakers)
    text = tok.decode(answer)
    final = text if extract is None else extract(text)
    lines.append(f"answer: {text!r}" + ("" if final == text else f"  final answer: {final!r}"))
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
    return one_line(n, 40)


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
