"""Layer 2 of Echo Forge: genetic programming over decoding programs (DEAP), with
gradient-tuned constants.

    from evolution import EvolutionConfig, SearchSpace, build_toolbox
    from evolution import initial_population, evolve_generation
    toolbox = build_toolbox(EvolutionConfig(seed=0), SearchSpace.for_model(model))
    rng = random.Random(0)
    pop = initial_population(toolbox, rng, seeds=defs)
    pop = evolve_generation(pop, evaluate, toolbox, rng, tune=tuner)

Modules, in data-flow order: `bridge` (primitive set, AST <-> PrimitiveTree, individuals),
`random_trees` (random typed trees, literal values, generation 0), `variation` (typed
crossover and mutations, size/height caps), `selection` (NSGA-II, Pareto hall of fame,
tournaments), `genealogy` (lineage graph), `simplify`, `evaluation` (shared-model scoring,
process/Ray maps), `tuner` (the GP's gradient tuning of new individuals, on top of
`engine_dsl.tuning`), `population` (toolbox, one generation).
Only this package imports DEAP.
"""

from .bridge import Fitness, Individual, SearchSpace, individual, to_definition, to_expr, to_tree
from .config import EvolutionConfig
from .evaluation import (
    DecodeEvaluator,
    LikelihoodEvaluator,
    ProcessMap,
    RayMap,
    cache_rows,
    forward_cost,
    mean_kl,
)
from .genealogy import Lineage
from .population import (
    Population,
    build_toolbox,
    evaluate_population,
    evolve_generation,
    initial_population,
)
from .simplify import simplify
from .tuner import LikelihoodTuner

__all__ = [
    "DecodeEvaluator", "EvolutionConfig", "Fitness", "Individual", "LikelihoodEvaluator",
    "LikelihoodTuner", "Lineage", "Population", "ProcessMap", "RayMap", "SearchSpace",
    "build_toolbox", "cache_rows", "evaluate_population", "evolve_generation", "forward_cost",
    "individual", "initial_population", "mean_kl", "simplify", "to_definition", "to_expr",
    "to_tree",
]
