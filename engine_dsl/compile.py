"""Typed AST -> `torch.nn.Module`, without eval (DESIGN §2, §6).

`compile_expr(expr)` turns an expression into a `LogitsProgram`: a tree of small node objects
that call the kernels of `engine_dsl.semantics` (no source text is generated or executed).

Parameters. Each trainable real constant becomes one 0-dim float64 `nn.Parameter` holding its
*unconstrained* value, and each Weights literal one 1-d float64 parameter (used as is: the
primitives apply softmax/sigmoid themselves); both in prefix order, the order of
`nodes.tunable_constants` and of DEAP's PrimitiveTree. The map to a real constant's domain is
the registry slot's transform: identity, lo + softplus(x), or lo + (hi - lo) * sigmoid(x); the
inverse is clamped (DOMAIN margin 1e-6) so closed ends such as a `mix` weight of 0 or 1, or a
penalty of exactly 1, give finite parameters. `(fixed c)` is a buffer, never a parameter.
float64 keeps the round trip literal -> parameter -> literal exact to ~1e-16.

Exact mode uses each constant as a Python float. While a parameter is untouched (its in-place
version counter unchanged) that float is the literal itself, so `f(x, mode="exact")` applies
exactly the numbers written in the program (bitwise parity with `transformers`); after tuning
it is the transformed parameter. `to_expr()` / `write_back(expr, module)` return the AST with
the current values as plain Python floats (untouched constants keep their literal), which the
printer prints so that they read back to the same value.

Fusion. In exact mode a run of nested temperature/top-k/top-p/min-p forms (at least one a
truncation) is evaluated by `semantics.truncation_chain`, one sort for the whole run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import semantics as sem
from .nodes import (
    Apply,
    BoolConst,
    CountConst,
    Definition,
    Expr,
    RealConst,
    WeightsConst,
    type_of,
    with_constants,
)
from .primitives.sources import head_gates
from .registry import PRIMITIVES
from .types import Domain, Type

MODES = ("exact", "relaxed")
PER_NODE_INPUTS = frozenset({"gated_forward", "uniform", "state"})  # one stream / slot per node


# ----------------------------------------------------------------------------- transforms


def to_unconstrained(value: float, domain: Domain | None) -> float:
    """The parameter value whose transform is `value` (`Domain.unconstrained`)."""
    return float(value) if domain is None else domain.unconstrained(value)


def to_domain(raw: torch.Tensor, domain: Domain | None) -> torch.Tensor:
    """Differentiable map of an unconstrained parameter into its domain (the tensor twin of
    `Domain.constrained`)."""
    if domain is None or domain.transform == "identity":
        return raw
    if domain.transform == "softplus":
        return domain.lo + F.softplus(raw)
    if domain.transform == "sigmoid":
        return domain.lo + (domain.hi - domain.lo) * torch.sigmoid(raw)
    raise ValueError(f"unknown transform {domain.transform!r}")


# ----------------------------------------------------------------------------- nodes


class _Env:
    __slots__ = ("mode", "ctx", "program", "record", "params")

    def __init__(self, mode, ctx, program, record=None):
        self.mode, self.ctx, self.program, self.record = mode, ctx, program, record
        # the constants by str(slot) (indexing the ParameterList itself takes tens of
        # microseconds once other work has run in between: about 5% of a fused chain's call)
        self.params = program.constants._parameters

    def to_domain(self, v, domain):
        """A computed Real into its slot's domain (`semantics.clamp_to_domain`: the clamp,
        smooth first in relaxed mode)."""
        return sem.clamp_to_domain(v, domain, self.ctx.sharpness if self.mode == "relaxed"
                                   else None)


class _Node:
    def run(self, env: _Env):  # pragma: no cover - interface
        raise NotImplementedError


class _Real(_Node):
    """A trainable real constant: parameter `slot`."""

    def __init__(self, slot: int, domain: Domain | None, literal: float):
        self.slot, self.key, self.domain = slot, str(slot), domain
        self.exact = sem.clamp_to_domain(literal, domain)  # its value while untouched

    def run(self, env):
        p = env.params[self.key]
        if env.mode == "exact":
            if p._version == env.program._versions[self.slot]:
                return self.exact
            with torch.no_grad():
                return sem.clamp_to_domain(float(to_domain(p, self.domain)), self.domain)
        return sem.clamp_to_domain(to_domain(p, self.domain), self.domain)


class _Fixed(_Node):
    def __init__(self, name: str, value: float, domain: Domain | None):
        self.name, self.value, self.domain = name, value, domain

    def run(self, env):
        if env.mode == "exact":
            return sem.clamp_to_domain(self.value, self.domain)
        return sem.clamp_to_domain(getattr(env.program, self.name), self.domain)


class _Weights(_Node):
    def __init__(self, slot: int):
        self.key = str(slot)

    def run(self, env):
        return env.params[self.key]


class _Literal(_Node):
    def __init__(self, value):
        self.value = value

    def run(self, env):
        if isinstance(self.value, bool) and env.mode == "relaxed":
            return sem.bool_relaxed(self.value)
        return self.value


class _Call(_Node):
    def __init__(self, node: Apply, children: list[_Node], slots: dict[str, int] | None = None):
        self.node, self.children, self.slots = node, children, slots or {}
        prim = self.prim = PRIMITIVES[node.op]
        # computed Reals are mapped into their slot's domain (`_Env.to_domain`)
        self.clamp = [a.domain if a.type is Type.REAL and isinstance(c, _Call) else None
                      for a, c in zip(prim.args, children, strict=True)]

    def run(self, env):
        args = [c.run(env) for c in self.children]
        args = [a if d is None else env.to_domain(a, d) for a, d in zip(args, self.clamp,
                                                                        strict=True)]
        env.ctx.node, env.ctx.slots = self.node, self.slots
        out = self.prim.kernel(env.mode)(env.ctx, *args)
        store = env.ctx.sources.state
        if self.prim.update is not None and env.mode == "exact" and store is not None \
                and env.record is None:  # (evaluate_nodes only looks)
            store.defer(self.slots.get("state", 0), self.prim.update, out, args)
        if env.record is not None:
            env.record[self.node] = out
        return out


class _Chain(_Node):
    """A nesting of transforms with a fused form over one input (innermost first)."""

    def __init__(self, calls: list[_Call], source: _Node):
        self.calls, self.source = calls, source

    def run(self, env):
        x = self.source.run(env)
        if env.mode == "exact":
            steps = []
            for call in self.calls:
                a = call.children[1].run(env)
                if call.clamp[1] is not None:
                    a = env.to_domain(a, call.clamp[1])
                steps.append((call.prim, a))
            env.ctx.node = self.calls[-1].node
            return sem.truncation_chain(env.ctx, x, steps)
        for call in self.calls:
            a = call.children[1].run(env)
            if call.clamp[1] is not None:
                a = env.to_domain(a, call.clamp[1])
            env.ctx.node, env.ctx.slots = call.node, call.slots
            x = call.prim.relaxed(env.ctx, x, a)
        return x


# ----------------------------------------------------------------------------- the module


class LogitsProgram(nn.Module):
    """A compiled expression. Parameters: its tunable constants, unconstrained, prefix order.

    Call as `f(logits, history=None, *, mode="exact", sharpness=..., **sources)`; see
    `forward`.
    """

    def __init__(self, expr: Expr, *, fuse: bool = True):
        super().__init__()
        if type_of(expr) is Type.DECODER:
            raise ValueError("compile_expr takes a Logits (or Real/Bool) expression; decode a "
                             "Decoder with engine_dsl.decode")
        self.expr = expr
        self.fuse = fuse
        self.constants = nn.ParameterList()
        self._domains: list[Domain | None] = []
        self._literals: list[float | tuple[float, ...]] = []
        self._n_fixed = 0
        self._n_reading: dict[str, int] = {}  # nodes so far reading each per-node input
        self.reads: set[str] = set()
        self._root = self._build(expr, None)
        self._versions = [p._version for p in self.constants]

    # -- building (prefix order: a node's slot is assigned before its later siblings')
    def _build(self, e: Expr, domain: Domain | None) -> _Node:
        if isinstance(e, RealConst):
            if e.fixed:
                name = f"fixed_{self._n_fixed}"
                self._n_fixed += 1
                self.register_buffer(name, torch.tensor(float(e.value), dtype=torch.float64))
                return _Fixed(name, float(e.value), domain)
            slot = len(self.constants)
            raw = to_unconstrained(e.value, domain)
            self.constants.append(nn.Parameter(torch.tensor(raw, dtype=torch.float64)))
            self._domains.append(domain)
            self._literals.append(float(e.value))
            return _Real(slot, domain, float(e.value))
        if isinstance(e, WeightsConst):
            slot = len(self.constants)
            self.constants.append(
                nn.Parameter(torch.tensor([float(v) for v in e.values], dtype=torch.float64)))
            self._domains.append(None)
            self._literals.append(tuple(float(v) for v in e.values))
            return _Weights(slot)
        if isinstance(e, CountConst):
            return _Literal(int(e.value))
        if isinstance(e, BoolConst):
            return _Literal(bool(e.value))
        if not isinstance(e, Apply):
            raise TypeError(f"not an expression: {e!r}")
        if e.op not in PRIMITIVES:
            raise ValueError(f"unknown primitive {e.op!r}")
        prim = PRIMITIVES[e.op]
        self.reads.update(prim.reads)
        if self.fuse and prim.fused is not None:
            run, inner = [], e
            while isinstance(inner, Apply) and PRIMITIVES[inner.op].fused is not None:
                run.append(inner)
                inner = inner.args[0]
            fused = [PRIMITIVES[a.op].fused for a in run]
            if len(run) >= 2 and any(f.keeps_top or f.sorts for f in fused):
                source = self._build(inner, None)
                calls = []
                for a in reversed(run):  # innermost first = prefix order of their args
                    p = PRIMITIVES[a.op]
                    self.reads.update(p.reads)
                    arg = self._build(a.args[1], p.args[1].domain)
                    calls.append(_Call(a, [source, arg]))
                return _Chain(calls, source)
        slots = {}
        for what in sorted(prim.reads & PER_NODE_INPUTS):
            if what == "uniform":  # the primitive's own stream: simplifying elsewhere in
                slots[what] = sem.stream_of(prim.name)  # the program keeps its draws
                continue
            slots[what] = self._n_reading.get(what, 0)
            self._n_reading[what] = slots[what] + 1
        children = [self._build(a, s.domain) for a, s in zip(e.args, prim.args, strict=True)]
        return _Call(e, children, slots)

    # -- evaluation
    def forward(self, logits: torch.Tensor | None = None, history: torch.Tensor | None = None,
                *, mode: str = "exact", sharpness: float = sem.DEFAULT_SHARPNESS,
                sources: sem.Sources | None = None, **more) -> torch.Tensor:
        """Evaluate on a batch of rows.

        logits (B, V): the model's final logits; history (B, T): prompt + answer ids so far
        (ids < 0 are padding); more: the other `semantics.Sources` fields (history_mask,
        residuals, lens, gated, n_layer, n_head), or pass a whole `sources=`.
        mode: "exact" (hard masks, -inf) or "relaxed" (soft masks, differentiable).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if sources is None:
            src = sem.Sources(logits=logits, history=history, **more)
        else:
            src = sources
            if logits is not None or history is not None or more:
                src = replace(src, **more, **({"logits": logits} if logits is not None else {}),
                              **({"history": history} if history is not None else {}))
        ctx = sem.Context(src, float(sharpness))
        out = self._root.run(_Env(mode, ctx, self))
        if isinstance(out, (bool, int, float)):
            base = src.logits
            n = 1 if base is None else base.size(0)
            dtype = torch.bool if isinstance(out, bool) else torch.float64
            out = torch.full((n,), out, dtype=dtype)
        return out

    def evaluate_nodes(self, sources: sem.Sources, nodes=None) -> dict:
        """Exact value of every application node (of `nodes`, or all) on `sources`, keyed by
        node (for `trace`; compile with fuse=False to see inside truncation chains)."""
        record: dict = {}
        self._root.run(_Env("exact", sem.Context(sources), self, record))
        rows = 1 if sources.logits is None else sources.logits.size(0)
        for n, v in record.items():  # a constant result stands for every row
            if isinstance(v, (bool, int, float)):
                record[n] = torch.full((rows,), v, dtype=torch.bool if isinstance(v, bool)
                                       else torch.float64)
        return record if nodes is None else {n: record[n] for n in nodes}

    # -- constants
    @property
    def n_gated(self) -> int:
        """Number of nodes reading a gated forward (extra forward streams when decoding)."""
        return self._n_reading.get("gated_forward", 0)

    def values(self) -> list[float | tuple[float, ...]]:
        """Current constant values in their domains (Weights as tuples), prefix order."""
        out = []
        with torch.no_grad():
            for i, p in enumerate(self.constants):
                if p._version == self._versions[i]:
                    out.append(self._literals[i])
                elif self._domains[i] is None and p.dim() == 1:
                    out.append(tuple(float(v) for v in p.tolist()))
                else:
                    out.append(float(sem.clamp_to_domain(float(to_domain(p, self._domains[i])),
                                                         self._domains[i])))
        return out

    def gate_values(self, n_layer: int, n_head: int) -> list[torch.Tensor]:
        """The head gates (n_layer, n_head) of each node reading a gated forward (its Weights
        argument through sigmoid), prefix order."""
        return [head_gates(call.children[0].run(_Env("exact", None, self)).detach(), n_layer,
                           n_head, call.node.span)
                for call in self._calls() if "gated_forward" in call.prim.reads]

    def _calls(self):
        """Every `_Call` in prefix order."""
        stack = [self._root]
        while stack:
            n = stack.pop()
            if isinstance(n, _Chain):
                stack.extend(reversed([n.source, *(c.children[1] for c in n.calls)]))
            elif isinstance(n, _Call):
                yield n
                stack.extend(reversed(n.children))

    def to_expr(self) -> Expr:
        """The compiled expression with the current (e.g. tuned) constant values."""
        return write_back(self.expr, self)


def write_back(expr: Expr | Definition, program: LogitsProgram | Sequence) -> Expr | Definition:
    """`expr` with its tunable reals and Weights replaced, in prefix order, by the program's
    current values (or by a given list of values): `nodes.with_constants`."""
    return with_constants(expr, program.values() if isinstance(program, LogitsProgram)
                          else program)


def compile_expr(expr: Expr | Definition | str, *, fuse: bool = True) -> LogitsProgram:
    """Compile a Logits expression (an AST, a Definition's body or Scheme text)."""
    if isinstance(expr, str):
        from .checker import read_expr

        expr = read_expr(expr, Type.LOGITS)
    if isinstance(expr, Definition):
        expr = expr.body
    return LogitsProgram(expr, fuse=fuse)


def logits_fn(text: str, filename: str = "<expr>") -> LogitsProgram:
    """The Python API's entry point: Scheme text of a Logits expression -> module."""
    from .checker import read_expr

    return LogitsProgram(read_expr(text, Type.LOGITS, filename))
