"""Genealogy: who came from whom, by which operator; a networkx DiGraph saved as GraphML.

Nodes are individual ids with attributes (operator, generation, program text and, once
evaluated, score, cost, size: the valid score taken in the individual's own generation);
edges run parent -> child.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from engine_dsl.files import atomic_write
from engine_dsl.printer import expr_to_scheme

from .bridge import to_expr


class Lineage:
    """The family tree of a run."""

    def __init__(self, graph: nx.DiGraph | None = None):
        self.graph = graph if graph is not None else nx.DiGraph()

    def record(self, ind) -> None:
        """Add (or update) an individual and the edges from its parents."""
        attrs = {"operator": ind.operator, "generation": int(ind.generation),
                 "program": expr_to_scheme(to_expr(ind)), "size": len(ind)}
        if ind.fitness.valid and "score" not in self.graph.nodes.get(ind.id, {}):
            # the score taken in its own generation (as that generation's file records it);
            # a survivor re-scored on a later model keeps it
            score, cost, _ = ind.fitness.values
            attrs.update(score=float(score), cost=float(cost))
        self.graph.add_node(ind.id, **attrs)
        for p in ind.parents:
            if p not in self.graph:
                self.graph.add_node(p)
            self.graph.add_edge(p, ind.id)

    def parents(self, id_: str) -> list[str]:
        return sorted(self.graph.predecessors(id_))

    def ancestors(self, id_: str) -> set[str]:
        return nx.ancestors(self.graph, id_)

    def __contains__(self, id_: str) -> bool:
        return id_ in self.graph

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def write_graphml(self, path: str | Path) -> None:
        """Write atomically (a crash leaves the old file or the new one, whole)."""
        atomic_write(path, "\n".join(nx.generate_graphml(self.graph)) + "\n")

    @classmethod
    def read_graphml(cls, path: str | Path) -> Lineage:
        """The lineage in `path`; RunError if it is missing or damaged."""
        from xml.etree.ElementTree import ParseError

        from .rundir import RunError

        try:
            graph = nx.DiGraph(nx.read_graphml(path))
        except (OSError, ParseError, nx.NetworkXError, ValueError, KeyError) as e:
            raise RunError(f"{path}: unreadable lineage ({type(e).__name__}); the file is "
                           "missing or damaged") from None
        # what `record` writes (a parent from outside the run has no attributes): lineage
        # and the report read these as such, and walk ancestors, which a cycle never ends
        kinds = {"operator": (str,), "program": (str,), "generation": (int,), "size": (int,),
                 "score": (int, float), "cost": (int, float)}
        for n, attrs in graph.nodes(data=True):
            for key, kind in kinds.items():
                v = attrs.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, kind)):
                    raise RunError(f"{path}: individual {n!r} has {key} {v!r}, not "
                                   f"{'text' if kind == (str,) else 'a number'}; the file is "
                                   "damaged")
        if not nx.is_directed_acyclic_graph(graph):
            raise RunError(f"{path}: an individual is its own ancestor (a cycle); the file is "
                           "damaged")
        return cls(graph)
