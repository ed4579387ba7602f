"""Scores of text-task programs from what they write (DESIGN §3).

A program is scored on its sampled continuations of the valid prompts against the human
continuations of the same prompts, read by a frozen judge (`neural.text_measures.Judge`,
trained once on the train split, never the co-trained model). Every program is decoded with
the same draws (common random numbers), so differences between programs are paired.

Objectives (`text.objective`; higher is better), of a set of continuations:

* `human` (default): minus the gaps to the human continuations,
  |ln PPL - ln PPL_human| + |rep-4 - rep-4_human| / 100, with PPL the judge's pooled
  perplexity (per byte) and rep-4 SimCTG's (percent).
* `mauve`: MAUVE (`mauve-text`) between the judge features of the continuations and those of
  the human ones, the mean over `MAUVE_SEEDS` k-means quantizations (one quantization's
  noise is a third of a paired difference's spread on 1,024 prompts).
* `reward`: the seeds' reward, the mean over continuations of
  -PPL_i / 100 - 0.1 |len_i - len_human_i| / len_human_i + 0.1 distinct-1_i, with PPL_i the
  judge's per-byte perplexity of continuation i, lengths in bytes, distinct-1 over its words.

`human` is the default because it is cheap (one judge forward per continuation, counting)
and stable on the 64 prompts a generation scores: MAUVE quantizes 64 points into 6 clusters,
so its value moves by several points between draws. Both terms are 0 for the human text
itself; greedy's loops raise rep-4, pure sampling's wandering raises PPL. Its blind spot: a
program can match the pooled PPL with text unlike the human one (presence and frequency
penalties on bytes raise PPL to human level by avoiding common letters: MAUVE 0.26 where the
nucleus samplers have 0.95-1.0, docs/BENCHMARKS.md), so `bench/text.py` selects on `mauve`.

`rewards` gives one number per continuation, for co-training by reinforce: `reward` as above;
`human` (and `mauve`, which has no per-continuation form) as minus the gaps of the one
continuation to the human set: |ln PPL_i - ln PPL_human| + |rep-4_i - rep-4_human| / 100.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from engine_dsl.nodes import Expr
from neural.text_measures import (
    Judge,
    JudgeScores,
    distinct_n,
    log_perplexities,
    mauve_score,
    ngram_counts,
    perplexity,
    rep_from_counts,
)

from .evaluation import DecodeEvaluator
from .report import half_sample_interval, half_samples

OBJECTIVES = ("human", "mauve", "reward")
MAUVE_SEED = 25  # mauve-text's default k-means seed: the same quantization for every program
MAUVE_SEEDS = 5  # MAUVE is the mean over this many k-means quantizations (seeds 25, 26, ...)
NUCLEUS_95 = "(sample (top-p logits 0.95))"  # Holtzman et al.'s closest-to-human decoder
MAUVE_RESAMPLES = 50  # at most this many random halves for a MAUVE interval (each half
# costs MAUVE_SEEDS k-means runs)


@dataclass
class Written:
    """Continuations of the scorer's prompts (one each) and the judge's reading of them."""

    texts: list[str]
    stopped: list[bool]
    judge: JudgeScores
    rep4: list[tuple[int, int]] = field(init=False)  # each text's (distinct, all) 4-grams

    def __post_init__(self):
        self.rep4 = [ngram_counts(t, 4) for t in self.texts]


class TextScorer:
    """Measures continuations of `prompts` against the human `references` (see module doc)."""

    def __init__(self, judge: Judge, prompts: Sequence[str], references: Sequence[str],
                 objective: str = "human"):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown text objective {objective!r}; expected one of "
                             f"{', '.join(OBJECTIVES)}")
        self.judge, self.objective = judge, objective
        self.prompts, self.references = list(prompts), list(references)
        self.reader = judge.reader(self.prompts)  # each prompt read once, for every read
        self.human = self.read(self.references, [False] * len(self.references))

    @classmethod
    def of(cls, judge: Judge, examples, objective: str = "human") -> TextScorer:
        """The scorer of continuation examples: their prompts (`input`) against their human
        continuations (`output`)."""
        return cls(judge, [e.input for e in examples], [e.output for e in examples], objective)

    def read(self, texts: Sequence[str], stopped: Sequence[bool]) -> Written:
        """The judge's reading of continuations of the scorer's prompts."""
        return Written(list(texts), list(stopped), self.reader.score(texts, stopped))

    def score(self, w: Written, index: Sequence[int] | None = None) -> float:
        """The objective of continuations `w` (only the prompts at `index`, if given: a
        bootstrap resample), against the human continuations of the same prompts."""
        index = list(range(len(w.texts))) if index is None else list(index)
        if self.objective == "reward":
            r = self.rewards(w, index)
            return float(r.mean())
        h = self.human
        if self.objective == "mauve":
            return mauve_score(w.judge.features[index], h.judge.features[index],
                               seed=MAUVE_SEED, seeds=MAUVE_SEEDS)
        rep, rep_human = (rep_from_counts([x.rep4[i] for i in index]) for x in (w, h))
        return -(abs(math.log(perplexity(w.judge.subset(index)))
                     - math.log(perplexity(h.judge.subset(index))))
                 + abs(rep - rep_human) / 100.0)

    def rewards(self, w: Written, index: Sequence[int] | None = None) -> torch.Tensor:
        """One reward per continuation (at `index`), higher is better (see module doc)."""
        index = list(range(len(w.texts))) if index is None else list(index)
        log_ppl = log_perplexities(w.judge.subset(index))
        if self.objective == "reward":
            out = []
            for k, i in enumerate(index):
                n = len(w.texts[i].encode("utf-8"))
                n_ref = max(len(self.references[i].encode("utf-8")), 1)
                out.append(-math.exp(float(log_ppl[k])) / 100.0 - 0.1 * abs(n - n_ref) / n_ref
                           + 0.1 * distinct_n([w.texts[i]], 1))
            return torch.tensor(out)
        human_log_ppl = math.log(perplexity(self.human.judge))
        human_rep = rep_from_counts(self.human.rep4)
        reps = torch.tensor([rep_from_counts([w.rep4[i]]) for i in index])
        return -((log_ppl - human_log_ppl).abs() + (reps - human_rep).abs() / 100.0)

    def resamples(self, wanted: int) -> int:
        """How many random halves of the prompts to use where `wanted` are asked for: at
        most `MAUVE_RESAMPLES` for MAUVE (a k-means per quantization per half)."""
        return min(wanted, MAUVE_RESAMPLES) if self.objective == "mauve" else wanted

    def interval(self, w: Written, resamples: int, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
        """(score, low, high): the objective and its `level` interval over prompts from
        `resamples` random halves of them (`report.half_sample_interval`: a bootstrap's
        repeated prompts would distort MAUVE's quantization; MAUVE, a k-means per half: at
        most `MAUVE_RESAMPLES` halves)."""
        return self.paired_interval(w, None, resamples, seed, level)

    def paired_interval(self, w: Written, other: Written | None, resamples: int,
                        seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
        """(difference, low, high): the objective of `w` minus that of `other` (continuations
        of the same prompts with the same draws; None: the objective of `w` alone), with its
        interval over the same random halves of the prompts for both."""
        def stat(index=None):
            return self.score(w, index) - (0.0 if other is None else self.score(other, index))

        value = stat()
        halves = half_samples(len(w.texts), self.resamples(resamples), seed)
        if not halves or len(w.texts) < 4:
            return value, value, value
        return (value, *half_sample_interval(value, [stat(h) for h in halves], len(w.texts),
                                             level))


class TextEvaluator:
    """Text-task scores of many programs from batched decodes of every program x valid
    prompt (`DecodeEvaluator.decode`: groups of programs that fit `max_rows` rows, common
    random numbers), each program's continuations then read by the judge and measured
    (`TextScorer.score`); cost = mean forward positions per continuation."""

    def __init__(self, model, scorer: TextScorer, prompts: Sequence[Sequence[int]],
                 to_text: Callable[[Sequence[int]], str], seed: int = 0,
                 max_rows: int | None = None, **decode_options):
        self.scorer, self.to_text = scorer, to_text
        # the decode in groups of programs that fit `max_rows` rows, as answer tasks do
        self.decoder = DecodeEvaluator(model, prompts, [], seed=seed, max_rows=max_rows,
                                       **decode_options)

    @torch.no_grad()
    def write(self, decoders: Sequence[Expr]) -> list[tuple[Written, float]]:
        """Each program's continuations (read by the judge) and mean cost."""
        answers = self.decoder.decode(decoders)
        out = []
        for ans in answers:
            w = self.scorer.read([self.to_text(a.tokens) for a in ans],
                                 [a.stopped for a in ans])
            out.append((w, sum(a.cost for a in ans) / max(len(ans), 1)))
        return out

    def __call__(self, decoders: Sequence[Expr]) -> list[tuple[float, float]]:
        return [(self.scorer.score(w), cost) for w, cost in self.write(decoders)]



def text_reward(judge: Judge, objective: str = "human"):
    """Co-training's reward for text tasks, `(examples, texts, stopped) -> one float per
    example` (the `reinforce.Reward` signature): `TextScorer.rewards` of each continuation
    against the human continuations of the same examples."""

    def reward(examples, texts, stopped) -> list[float]:
        scorer = TextScorer.of(judge, examples, objective)
        return scorer.rewards(scorer.read(texts, stopped)).tolist()

    return reward
