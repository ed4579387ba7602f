"""The toolbox and one generation of the symbolic layer (DESIGN §3, layer 2).

    toolbox = build_toolbox(config, space)
    pop = initial_population(toolbox, rng, seeds=defs)
    pop = evaluate_population(pop, evaluate)
    for _ in range(n):
        pop = evolve_generation(pop, evaluate, toolbox, rng, tune=tuner)

`evaluate(exprs) -> [(score, cost), ...]` scores a list of Decoder expressions at once (so a
batched evaluator serves them all, see `evaluation`); `tune(expr, seed) -> expr` returns the
expression with its real constants tuned (see `tuning`). Everything random draws from the one
`random.Random` passed in, so a generation is a function of (population, rng state, scores).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from deap import base

from engine_dsl.checker import within_caps
from engine_dsl.nodes import Definition, Expr
from engine_dsl.printer import expr_to_scheme

from . import random_trees, selection, variation
from .bridge import Individual, SearchSpace, to_definition, to_expr, to_tree, tree_key
from .config import EvolutionConfig
from .genealogy import Lineage
from .tuner import has_constants

Evaluate = Callable[[list[Expr]], Sequence[tuple[float, float]]]
Tune = Callable[[Expr, int], Expr]

OPERATOR_NAMES = {  # toolbox name -> the operator recorded in provenance and lineage
    "mate": "cx-one-point",
    **{f"mut_{m}": f"mut-{m.replace('_', '-')}" for m in
       ("uniform", "node_replacement", "insert", "shrink", "constant", "count")},
}


def build_toolbox(config: EvolutionConfig, space: SearchSpace | None = None) -> base.Toolbox:
    """Every operator of the run in one place. Operators take `rng=` at call time; the
    variation operators are wrapped by the size and height caps of `config.limits`."""
    limits = config.limits
    space = space or SearchSpace(limits=limits)
    if space.limits != limits:
        space = replace(space, limits=limits)
    sampler = random_trees.ConstantSampler(space)

    tb = base.Toolbox()
    tb.config, tb.space, tb.sampler = config, space, sampler
    tb.register("individual", random_trees.random_individual, sampler=sampler,
                heights=config.init_heights)
    tb.register("mate", variation.cx_one_point, leaf_bias=config.leaf_bias)
    tb.register("mut_uniform", variation.mut_uniform, sampler=sampler,
                height=config.mutation_heights)
    tb.register("mut_node_replacement", variation.mut_node_replacement, sampler=sampler)
    tb.register("mut_insert", variation.mut_insert, sampler=sampler)
    tb.register("mut_shrink", variation.mut_shrink)
    tb.register("mut_constant", variation.mut_constant, sigma=config.constant_sigma)
    tb.register("mut_count", variation.mut_count, sampler=sampler)
    for name in OPERATOR_NAMES:
        tb.decorate(name, variation.static_limit(len, limits.max_size))
        tb.decorate(name, variation.static_limit(variation.tree_height, limits.max_height))
        tb.decorate(name, variation.static_limit(  # nested vote/best-of: their product
            lambda ind: not within_caps(to_expr(ind), limits), 0))
    tb.register("select", selection.select_survivors, kind=config.selection,
                fitness_size=config.tournament_size, parsimony_size=config.parsimony_size)
    tb.register("select_parents", selection.select_parents, kind=config.selection,
                fitness_size=config.tournament_size, parsimony_size=config.parsimony_size)
    tb.register("map", map)  # replace with evaluation.ProcessMap(...) or RayMap(...)
    return tb


def mutate(ind: Individual, toolbox: base.Toolbox, rng: random.Random) -> tuple[Individual, str]:
    """One mutation drawn by `config.mutation_weights`; returns (ind, operator name)."""
    weights = toolbox.config.mutation_weights
    names = [m for m, w in weights.items() if w > 0]
    name = rng.choices(names, [weights[m] for m in names])[0]
    (ind,) = getattr(toolbox, f"mut_{name}")(ind, rng=rng)
    return ind, OPERATOR_NAMES[f"mut_{name}"]


# --- the population --------------------------------------------------------------------------


@dataclass
class Population:
    """The individuals of one generation and the run-wide records that go with them.

    serial: the next number for `new_id` (ids are "g<generation>-<serial>", unique in a run).
    """

    individuals: list[Individual]
    generation: int = 0
    serial: int = 0
    lineage: Lineage = field(default_factory=Lineage)
    hall_of_fame: object = field(default_factory=selection.hall_of_fame)

    def new_id(self, generation: int | None = None) -> str:
        g = self.generation if generation is None else generation
        ident = f"g{g}-{self.serial}"
        self.serial += 1
        return ident

    def __len__(self) -> int:
        return len(self.individuals)

    def __iter__(self):
        return iter(self.individuals)

    def definitions(self) -> list[Definition]:
        """The population as definitions with provenance comments (best score first)."""
        ranked = sorted(self.individuals, key=_rank_key)
        return [to_definition(i, _fitness_info(i)) for i in ranked]

    def champion(self) -> Individual:
        """Highest score, then lowest cost, then smallest."""
        return min(self.individuals, key=_rank_key)

    def to_dict(self) -> dict:
        """JSON-ready state: programs as text, provenance and fitness (no pickle)."""
        return {"generation": self.generation, "serial": self.serial,
                "individuals": [_ind_dict(i) for i in self.individuals],
                "hall_of_fame": [_ind_dict(i) for i in self.hall_of_fame]}

    @classmethod
    def from_dict(cls, d: dict, lineage: Lineage | None = None) -> Population:
        pop = cls([_ind_from(x) for x in d["individuals"]], d["generation"], d["serial"],
                  lineage or Lineage())
        pop.hall_of_fame.update([_ind_from(x) for x in d.get("hall_of_fame", [])])
        return pop


def _rank_key(ind):
    if not ind.fitness.valid:
        return (1, 0.0, 0.0, len(ind))
    score, cost, size = ind.fitness.values
    return (0, -score, cost, size)


def _fitness_info(ind) -> dict:
    if not ind.fitness.valid:
        return {"size": len(ind)}
    score, cost, size = ind.fitness.values
    return {"score": score, "cost": cost, "size": int(size)}


def _ind_dict(ind) -> dict:
    return {"id": ind.id, "parents": list(ind.parents), "operator": ind.operator,
            "generation": ind.generation, "program": expr_to_scheme(to_expr(ind)),
            "fitness": list(ind.fitness.values) if ind.fitness.valid else None}


def _ind_from(d: dict) -> Individual:
    from engine_dsl import Type, read_expr

    ind = Individual(to_tree(read_expr(d["program"], Type.DECODER)), d["id"],
                     tuple(d["parents"]), d["operator"], d["generation"])
    if d.get("fitness") is not None:
        ind.fitness.values = tuple(d["fitness"])
    return ind


# --- one generation --------------------------------------------------------------------------


def initial_population(toolbox: base.Toolbox, rng: random.Random,
                       seeds: Sequence[Definition | Expr] = ()) -> Population:
    """Generation 0: the seeds, mutants of the seeds, random typed trees (`config`)."""
    config = toolbox.config
    pop = Population([])

    def mutant(ind):
        return (mutate(ind, toolbox, rng)[0],)

    pop.individuals = random_trees.init_population(
        config.population_size, rng, toolbox.sampler, pop.new_id, seeds, mutant,
        config.mutant_fraction, config.init_heights)
    for ind in pop.individuals:
        pop.lineage.record(ind)
    return pop


def evaluate_population(pop: Population, evaluate: Evaluate,
                        individuals: list[Individual] | None = None) -> Population:
    """Score every individual without a valid fitness (or those given) in one call to
    `evaluate`; identical programs are scored once. Updates hall of fame and lineage."""
    todo = [i for i in (individuals if individuals is not None else pop.individuals)
            if not i.fitness.valid]
    _evaluate(todo, evaluate)
    pop.hall_of_fame.update(pop.individuals)
    for ind in todo:
        pop.lineage.record(ind)
    return pop


def _evaluate(todo: list[Individual], evaluate: Evaluate) -> None:
    unique: dict[tuple, Expr] = {}
    for ind in todo:
        tree = getattr(ind, "evaluated_as", None) or ind
        unique.setdefault(tree_key(tree), to_expr(tree))
    if not unique:
        return
    keys = list(unique)
    results = list(evaluate([unique[k] for k in keys]))
    if len(results) != len(keys):
        raise ValueError(f"evaluate returned {len(results)} results for {len(keys)} programs")
    by_key = dict(zip(keys, results, strict=True))
    for ind in todo:
        tree = getattr(ind, "evaluated_as", None) or ind
        score, cost = by_key[tree_key(tree)]
        ind.fitness.values = (float(score), float(cost), float(len(ind)))


def vary(parents: list[Individual], toolbox: base.Toolbox, rng: random.Random,
         n: int, gen: int, new_id) -> list[Individual]:
    """n offspring (DEAP's varOr): crossover with cxpb, else one mutation with mutpb, else a
    copy; each with a new id, its parents' ids and its operator."""
    config = toolbox.config
    out = []
    for _ in range(n):
        r = rng.random()
        if r < config.cxpb:
            pa, pb = toolbox.select_parents(parents, 2, rng=rng)
            child, _ = toolbox.mate(Individual(list(pa)), Individual(list(pb)), rng=rng)
            child.parents, child.operator = (pa.id, pb.id), OPERATOR_NAMES["mate"]
        elif r < config.cxpb + config.mutpb:
            (p,) = toolbox.select_parents(parents, 1, rng=rng)
            child, op = mutate(Individual(list(p)), toolbox, rng)
            child.parents, child.operator = (p.id,), op
        else:
            (p,) = toolbox.select_parents(parents, 1, rng=rng)
            child = Individual(list(p))
            child.parents, child.operator = (p.id,), "copy"
            child.fitness.values = p.fitness.values if p.fitness.valid else ()
        child.id, child.generation = new_id(gen), gen
        out.append(child)
    return out


class _TuneCall:
    """Picklable `item -> tune(expr, seed)` for `toolbox.map` over processes."""

    def __init__(self, tune: Tune):
        self.tune = tune

    def __call__(self, item: tuple[Expr, int]) -> Expr:
        expr, seed = item
        return self.tune(expr, seed)


def tune_offspring(offspring: list[Individual], tune: Tune, toolbox: base.Toolbox,
                   rng: random.Random) -> list[Individual]:
    """Tune the real constants of new individuals (each with probability `tune_prob`), over
    `toolbox.map`. Lamarckian (default): the tuned values are written into the tree.
    Baldwinian: the tree keeps its values and the tuned program is what gets evaluated
    (`ind.evaluated_as`). Returns the individuals that were tuned."""
    config = toolbox.config
    chosen, tasks = [], []
    for ind in offspring:
        if ind.fitness.valid or config.tune_steps == 0:
            continue
        seed = rng.getrandbits(31)
        if rng.random() >= config.tune_prob:
            continue
        expr = to_expr(ind)
        if not has_constants(expr):
            continue
        chosen.append(ind)
        tasks.append((expr, seed))
    for ind, tuned in zip(chosen, toolbox.map(_TuneCall(tune), tasks), strict=True):
        nodes = to_tree(tuned)
        if len(nodes) != len(ind):
            raise ValueError("tuning changed the structure of a program")
        if config.lamarckian:
            ind[0:len(ind)] = nodes
        else:
            ind.evaluated_as = Individual(nodes)
        ind.tuned = True
    return chosen


def evolve_generation(pop: Population, evaluate: Evaluate, toolbox: base.Toolbox,
                      rng: random.Random, tune: Tune | None = None) -> Population:
    """The next generation: vary, tune the new individuals, score them (one `evaluate`
    call), select mu survivors from parents + offspring (duplicates dropped first), update
    the hall of fame and the lineage. Deterministic given `rng`'s state and the scores."""
    config = toolbox.config
    gen = pop.generation + 1
    parents = pop.individuals
    if config.reevaluate_parents:
        for p in parents:
            del p.fitness.values
    elif any(not p.fitness.valid for p in parents):
        _evaluate([p for p in parents if not p.fitness.valid], evaluate)
    offspring = vary(parents, toolbox, rng, config.n_offspring, gen, pop.new_id)
    if tune is not None:
        tune_offspring(offspring, tune, toolbox, rng)
    _evaluate([i for i in parents + offspring if not i.fitness.valid], evaluate)

    seen, candidates, dupes = set(), [], []
    for ind in parents + offspring:
        key = tree_key(ind)
        (dupes if key in seen else candidates).append(ind)
        seen.add(key)
    if len(candidates) < config.population_size:
        candidates += dupes[: config.population_size - len(candidates)]
    survivors = toolbox.select(candidates, config.population_size, rng=rng)

    pop.hall_of_fame.update(candidates)
    for ind in offspring:
        pop.lineage.record(ind)
    if config.reevaluate_parents:
        for ind in parents:
            pop.lineage.record(ind)
    return Population(list(survivors), gen, pop.serial, pop.lineage, pop.hall_of_fame)
