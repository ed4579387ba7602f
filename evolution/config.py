"""The settings of the symbolic layer: one dataclass, every field a config value."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from engine_dsl.registry import Limits

MUTATIONS = ("uniform", "node_replacement", "insert", "shrink", "constant", "count")
SELECTIONS = ("nsga2", "tournament")


def _default_mutation_weights() -> dict[str, float]:
    return {"uniform": 1.0, "node_replacement": 1.0, "insert": 0.5, "shrink": 0.5,
            "constant": 1.5, "count": 0.5}


@dataclass
class EvolutionConfig:
    """Genetic programming over decoding programs (DESIGN §3, layer 2)."""

    population_size: int = 32  # mu: individuals kept each generation
    offspring_size: int | None = None  # lambda: new individuals per generation (None: mu)
    cxpb: float = 0.5  # an offspring comes from crossover with this probability ...
    mutpb: float = 0.5  # ... else from one mutation with this; else it is a copy
    leaf_bias: float | None = 0.1  # crossover picks leaves with this probability (None: uniform)
    # relative odds of each mutation operator
    mutation_weights: dict[str, float] = field(default_factory=_default_mutation_weights)
    mutation_heights: tuple[int, int] = (0, 2)  # height of trees grown by mut_uniform
    constant_sigma: float = 0.3  # perturbation step, in the unconstrained parameterisation
    init_heights: tuple[int, int] = (2, 5)  # random initial trees: ramped half-and-half
    mutant_fraction: float = 0.5  # of the initial population: mutants of the seeds
    tune_prob: float = 1.0  # probability that a new individual's constants are tuned
    tune_steps: int = 10  # Adam steps per tuning
    tune_lr: float = 0.1  # Adam learning rate (unconstrained parameters)
    lamarckian: bool = True  # write tuned constants back (False: Baldwinian, fitness only)
    tune_guard: bool = True  # keep a tuning only if the exact likelihood got no worse
    selection: str = "nsga2"  # "nsga2" (score up, cost down, size down) | "tournament"
    tournament_size: int = 3  # for "tournament"
    parsimony_size: float = 1.4  # in [1, 2]: size tournament pressure of "tournament"
    reevaluate_parents: bool = False  # re-score survivors each generation (model changed)
    limits: Limits = field(default_factory=Limits)
    seed: int = 0  # every random draw of the run flows from this

    def __post_init__(self):
        if isinstance(self.limits, dict):
            self.limits = Limits(**self.limits)
        self.mutation_heights = tuple(self.mutation_heights)
        self.init_heights = tuple(self.init_heights)
        self.validate()

    @property
    def n_offspring(self) -> int:
        return self.offspring_size or self.population_size

    def validate(self) -> None:
        """Raise ValueError naming the first field out of range."""
        def require(ok, message):
            if not ok:
                raise ValueError(message)

        require(self.population_size >= 1,
                f"population_size must be >= 1, found {self.population_size}")
        require(self.offspring_size is None or self.offspring_size >= 1,
                f"offspring_size must be >= 1, found {self.offspring_size}")
        require(0 <= self.cxpb <= 1 and 0 <= self.mutpb <= 1 and self.cxpb + self.mutpb <= 1,
                f"cxpb and mutpb must be probabilities with cxpb + mutpb <= 1, found "
                f"{self.cxpb} and {self.mutpb}")
        require(self.leaf_bias is None or 0 <= self.leaf_bias <= 1,
                f"leaf_bias must be in [0, 1], found {self.leaf_bias}")
        unknown = set(self.mutation_weights) - set(MUTATIONS)
        require(not unknown, f"mutation_weights: unknown mutation(s) {sorted(unknown)}; known: "
                             f"{', '.join(MUTATIONS)}")
        require(any(w > 0 for w in self.mutation_weights.values()),
                "mutation_weights: some weight must be > 0")
        require(all(w >= 0 for w in self.mutation_weights.values()),
                "mutation_weights: every weight must be >= 0")
        require(0 <= self.mutation_heights[0] <= self.mutation_heights[1],
                f"mutation_heights must satisfy 0 <= lo <= hi, found {list(self.mutation_heights)}")
        require(0 < self.constant_sigma < math.inf,
                f"constant_sigma must be finite and > 0, found {self.constant_sigma}")
        require(0 <= self.mutant_fraction <= 1,
                f"mutant_fraction must be in [0, 1], found {self.mutant_fraction}")
        require(0 <= self.tune_prob <= 1, f"tune_prob must be in [0, 1], found {self.tune_prob}")
        require(self.tune_steps >= 0, f"tune_steps must be >= 0, found {self.tune_steps}")
        require(0 < self.tune_lr < math.inf,
                f"tune_lr must be finite and > 0, found {self.tune_lr}")
        require(self.selection in SELECTIONS, f"selection must be one of "
                                              f"{', '.join(SELECTIONS)}, found '{self.selection}'")
        require(1 <= self.parsimony_size <= 2,
                f"parsimony_size must be in [1, 2], found {self.parsimony_size}")
        require(self.tournament_size >= 1,
                f"tournament_size must be >= 1, found {self.tournament_size}")
        require(1 <= self.init_heights[0] <= self.init_heights[1] <= self.limits.max_height,
                f"init_heights must satisfy 1 <= lo <= hi <= limits.max_height = "
                f"{self.limits.max_height}, found {list(self.init_heights)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EvolutionConfig:
        """Build from a dict, ignoring unknown keys (configs from newer versions still load)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
