"""Measures of generated text, and the judge that scores it.

Text here is what a byte-level model writes; the n-gram measures count **whitespace words**
(`str.split()`), the unit of the literature's tables (SimCTG and Holtzman et al. count word
or BPE tokens; bytes would make every text look repetitive: "the" holds a repeated byte
bigram of nothing). Every measure takes a list of continuations, one per prompt:

| measure | definition |
|---|---|
| `rep_n(texts, n)` | SimCTG: 100 x (1 - sum of each text's unique n-grams / sum of its n-grams) |
| `diversity(texts)` | SimCTG: prod over n = 2..4 of (1 - rep-n / 100) |
| `distinct_n(texts, n)` | Li et al.: distinct n-grams of all texts together / all n-grams |
| `zipf_coefficient(texts)` | Holtzman: minus the least-squares slope of log frequency on |
| | log rank of the texts' words (the top `max_rank` ranks) |
| `loop_share(texts)` | Holtzman's repetition: % of texts that end in a loop (`ends_in_loop`) |
| `self_bleu(texts)` | Texygen's Self-BLEU-4: mean sacrebleu sentence BLEU of each text |
| | against all the others (0-100) |
| `Judge.score` | judge NLL, token counts and features of continuations given their prompts |
| | (`Judge.reader`: the same, each prompt read once for many sets of continuations) |
| `perplexity(scores)` | exp(total judge NLL / total tokens), pooled over texts |
| `mauve_score(p, q)` | MAUVE (`mauve-text`) between two sets of judge features |

SimCTG counts n-grams within each text (a text shorter than n words has none); rep-n of a set
without n-grams is 0. A text *ends in a loop* when its last bytes repeat with some period p:
the final `span` bytes satisfy text[i] == text[i + p], hold at least two whole periods (span
>= 2p) and at least `min_bytes` bytes (so "the cat the cat the c", cut by the length cap
mid-phrase, loops with p = 8 once it is long enough; a short echo such as "no, no" does not).

The judge is a byte-level GPT trained once on a task's train split and then frozen; it is
never the model being co-trained, so neither evolution nor co-training can move it. It is
cached by a key of its training data and settings (`Judge.load_or_train`), as safetensors.
MAUVE features: the judge's final hidden state (after the final LayerNorm), mean-pooled over
the positions that predict the continuation's tokens, read with the prompt before it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_model, save_model
from .corpus import cache_dir
from .model import GPT, GPTConfig, KVCache
from .tasks import Example, TextCorpus
from .tokenizer import ByteTokenizer
from .train import TrainConfig, Trainer

REP_ORDERS = (2, 3, 4)  # SimCTG's rep-n and diversity
LOOP_MIN_BYTES = 32  # a loop must cover at least this many final bytes
ZIPF_MAX_RANK = 5000  # Holtzman's fit uses the most frequent 5000 words


# --- n-gram measures --------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """The measures' unit: whitespace-separated words."""
    return text.split()


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def ngram_counts(text: str, n: int) -> tuple[int, int]:
    """(distinct n-grams, n-grams) of one text's words."""
    grams = ngrams(words(text), n)
    return len(set(grams)), len(grams)


def rep_from_counts(counts: Sequence[tuple[int, int]]) -> float:
    """rep-n in percent from each text's `ngram_counts`."""
    unique = sum(u for u, _ in counts)
    total = sum(t for _, t in counts)
    return 0.0 if total == 0 else 100.0 * (1.0 - unique / total)


def rep_n(texts: Sequence[str], n: int) -> float:
    """SimCTG's rep-n, in percent: 100 x (1 - sum_i |unique n-grams of text i| / sum_i |n-grams
    of text i|); 0 when the texts hold no n-gram."""
    return rep_from_counts([ngram_counts(t, n) for t in texts])


def diversity(texts: Sequence[str]) -> float:
    """SimCTG's diversity: prod over n = 2, 3, 4 of (1 - rep-n / 100), in [0, 1]."""
    return math.prod(1.0 - rep_n(texts, n) / 100.0 for n in REP_ORDERS)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """distinct-n (Li et al. 2016): distinct n-grams over all texts / all n-grams; 0 if none."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for t in texts:
        grams = ngrams(words(t), n)
        seen.update(grams)
        total += len(grams)
    return 0.0 if total == 0 else len(seen) / total


def zipf_coefficient(texts: Sequence[str], max_rank: int = ZIPF_MAX_RANK) -> float:
    """Zipf's coefficient s of the texts' word frequencies (freq ~ rank^-s): minus the
    least-squares slope of log(frequency) on log(rank) over ranks 1..max_rank (ties in
    frequency ranked in any order: their frequencies are equal). NaN with < 2 distinct words."""
    counts = sorted(Counter(w for t in texts for w in words(t)).values(), reverse=True)
    counts = counts[:max_rank]
    if len(counts) < 2:
        return math.nan
    x = [math.log(r) for r in range(1, len(counts) + 1)]
    y = [math.log(c) for c in counts]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    return -sxy / sxx


def ends_in_loop(text: str, min_bytes: int = LOOP_MIN_BYTES) -> bool:
    """Whether the text's last bytes repeat with a period p (see the module doc): some p has
    text[i] == text[i + p] over a final span of >= max(2p, min_bytes) bytes."""
    b = text.encode("utf-8")
    n = len(b)
    for p in range(1, n // 2 + 1):
        k = 0  # final bytes that equal the byte p before them
        while k < n - p and b[n - 1 - k] == b[n - 1 - k - p]:
            k += 1
        if k + p >= max(2 * p, min_bytes):
            return True
    return False


def loop_share(texts: Sequence[str], min_bytes: int = LOOP_MIN_BYTES) -> float:
    """Holtzman's repetition: percent of texts that end in a loop (`ends_in_loop`)."""
    if not texts:
        return 0.0
    return 100.0 * sum(ends_in_loop(t, min_bytes) for t in texts) / len(texts)


def self_bleu(texts: Sequence[str], max_texts: int | None = None) -> float:
    """Self-BLEU-4 (Zhu et al. 2018, Texygen): the mean over texts of sacrebleu's sentence BLEU
    (4-grams, exponential smoothing, tokenize "none" on the texts' whitespace words) of each
    text against all the others as references; 0-100, higher = less diverse. `max_texts`:
    only the first that many texts (its cost grows with the square of their number)."""
    scores = self_bleu_per_text(list(texts)[:max_texts])
    return sum(scores) / len(scores) if len(scores) > 1 else 0.0


def self_bleu_per_text(texts: Sequence[str]) -> list[float]:
    """Each text's sentence BLEU-4 against all the others (`self_bleu`); 0 for a lone text."""
    from sacrebleu.metrics import BLEU

    docs = [" ".join(words(t)) for t in texts]
    if len(docs) < 2:
        return [0.0] * len(docs)
    bleu = BLEU(tokenize="none", max_ngram_order=4, smooth_method="exp",
                effective_order=True)
    return [bleu.sentence_score(h, docs[:i] + docs[i + 1:]).score for i, h in enumerate(docs)]


def mauve_score(p_features, q_features, *, seed: int = 25, seeds: int = 1,
                buckets: int | str = "auto") -> float:
    """MAUVE (Pillutla et al. 2021, the `mauve-text` package) between two feature sets (n, d):
    k-means quantization (`buckets` clusters; "auto" = n / 10), scaling constant 5; the mean
    over `seeds` quantizations (k-means seeds `seed`, `seed` + 1, ...): on 1,024 points one
    quantization moves MAUVE by about 0.02 (standard deviation over k-means seeds), so a mean
    over 5 halves the interval of a paired difference (docs/BENCHMARKS.md, issue 12)."""
    import mauve
    import numpy as np

    p = np.asarray(p_features, dtype=np.float32)
    q = np.asarray(q_features, dtype=np.float32)
    total = 0.0
    with _quiet_stderr():  # faiss warns on stderr whenever points per cluster are few
        for s in range(seed, seed + seeds):
            out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=buckets, seed=s,
                                      kmeans_num_redo=1, kmeans_max_iter=100, verbose=False,
                                      device_id=-1)
            total += float(out.mauve)
    return total / seeds


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 sent to /dev/null for the block (C++ libraries write to it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --- the judge --------------------------------------------------------------------------------


@dataclass
class JudgeScores:
    """The judge's reading of n continuations, each given its prompt."""

    nll: torch.Tensor  # (n,) summed negative log-likelihood (nats) of the continuation's tokens
    tokens: torch.Tensor  # (n,) tokens scored: the continuation's bytes (+ EOS if it stopped)
    features: torch.Tensor  # (n, C) mean final hidden state over the continuation's positions

    def subset(self, index) -> JudgeScores:
        return JudgeScores(self.nll[index], self.tokens[index], self.features[index])


def perplexity(scores: JudgeScores) -> float:
    """exp(total NLL / total tokens) over all the continuations (pooled, as a corpus)."""
    tokens = float(scores.tokens.sum())
    return math.exp(float(scores.nll.sum()) / tokens) if tokens else math.nan


def log_perplexities(scores: JudgeScores) -> torch.Tensor:
    """(n,) each continuation's own mean NLL per token (0 where nothing was scored)."""
    return scores.nll / scores.tokens.clamp(min=1)


@dataclass
class JudgeConfig:
    """How the judge is built: its architecture and training (the cache key holds both)."""

    model: GPTConfig
    train: TrainConfig

    def key(self, data: Sequence[Example] | TextCorpus) -> str:
        """sha256 of the training data and settings: the judge's cache directory name."""
        h = hashlib.sha256()
        h.update(json.dumps([self.model.to_dict(), self.train.to_dict()],
                            sort_keys=True).encode())
        if isinstance(data, TextCorpus):
            h.update(data.lengths.numpy().tobytes())
            h.update(data.data.numpy().tobytes())
        else:
            for e in data:
                h.update(json.dumps([e.input, e.output]).encode())
        return h.hexdigest()[:24]


class Judge:
    """A frozen byte-level GPT that reads continuations (never the co-trained generator)."""

    def __init__(self, model: GPT, tokenizer: ByteTokenizer | None = None):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer or ByteTokenizer()

    @classmethod
    def train(cls, data: Sequence[Example] | TextCorpus, config: JudgeConfig,
              on_step: Callable[[int, dict], None] | None = None) -> Judge:
        """Train a fresh GPT on `data`: examples (loss on prompt and continuation bytes
        alike) or running text (`TextCorpus`)."""
        tok = ByteTokenizer()
        torch.manual_seed(config.train.seed)
        model = GPT(config.model)
        trainer = Trainer(model, tok, data, replace(config.train, answer_only=False,
                                                        extra_lambda=0.0))
        for i in range(config.train.steps):
            info = trainer.step()
            if on_step is not None:
                on_step(i, info)
        return cls(model, tok)

    @classmethod
    def load_or_train(cls, data: Sequence[Example] | TextCorpus, config: JudgeConfig,
                      root: str | Path | None = None,
                      on_step: Callable[[int, dict], None] | None = None,
                      on_train: Callable[[Path], None] | None = None) -> Judge:
        """The judge of `data` under `config`, from `root/judges/KEY/` (safetensors) or
        trained once and saved there. `on_train(directory)` is called before training. A
        cached judge that cannot be read (its files cut short, one of them missing: a process
        killed between them) is a cache miss: trained again and saved over it."""
        directory = Path(root or cache_dir()) / "judges" / config.key(data)
        if (directory / "model.safetensors").exists():
            try:
                return cls(load_model(str(directory)))
            except CheckpointError:
                pass
        if on_train is not None:
            on_train(directory)
        judge = cls.train(data, config, on_step)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(judge.model, str(directory), tokenizer=judge.tokenizer,
                   step=config.train.steps)
        return judge

    def reader(self, prompts: Sequence[str], batch_rows: int = 64) -> PromptReader:
        """A reader of continuations of these prompts that reads each prompt once
        (`PromptReader`): for many sets of continuations of the same prompts."""
        return PromptReader(self, prompts, batch_rows)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], continuations: Sequence[str],
              stopped: Sequence[bool] | None = None, batch_rows: int = 64) -> JudgeScores:
        """Read `BOS prompt continuation` (+ EOS where `stopped`), as in training: the model
        reads every token but the last, at most block_size of them (a longer row loses the
        start of its prompt). NLL counts the continuation's tokens (bytes, and the EOS);
        features mean the final hidden state over the positions that predict them (the
        prompt's last position through the continuation's last-but-one token; an empty
        continuation: the prompt's last position). Each row is read whole; `reader` reads
        the prompts once for many calls."""
        if len(prompts) != len(continuations):
            raise ValueError("one prompt per continuation")
        stopped = [False] * len(prompts) if stopped is None else list(stopped)
        tok, block = self.tokenizer, self.model.config.block_size
        rows = []  # (ids, first continuation position)
        for p, c, s in zip(prompts, continuations, stopped, strict=True):
            tail = tok.encode(c, eos=bool(s))
            ids = (tok.encode(p, bos=True) + tail)[-(block + 1):]
            rows.append((ids, len(ids) - min(len(tail), len(ids) - 1)))
        nll, count, feats = [], [], []
        for start in range(0, len(rows), batch_rows):
            chunk = rows[start:start + batch_rows]
            width = min(max(len(r[0]) for r in chunk), block)  # model inputs per row
            ids = torch.full((len(chunk), width + 1), tok.pad_id, dtype=torch.long)
            scored = torch.zeros(len(chunk), width, dtype=torch.bool)  # at input t: t + 1
            for i, (row, first) in enumerate(chunk):
                ids[i, :len(row)] = torch.tensor(row)
                scored[i, first - 1:len(row) - 1] = True
            out = self.model.forward_step(ids[:, :width])  # right padding: causal, no mask
            logp = torch.log_softmax(out.logits.float(), dim=-1)
            target_lp = logp.gather(2, ids[:, 1:, None]).squeeze(2)
            nll.append(-(target_lp * scored).sum(1))
            count.append(scored.sum(1))
            pooled = scored.clone()
            for i, (row, _) in enumerate(chunk):
                if not scored[i].any():
                    pooled[i, min(len(row), width) - 1] = True
            hidden = self.model.transformer.ln_f(out.residuals[-1]).float()  # (B, T, C)
            w = pooled.float()
            feats.append((hidden * w[..., None]).sum(1) / w.sum(1, keepdim=True))
        return JudgeScores(torch.cat(nll), torch.cat(count), torch.cat(feats))


class PromptReader:
    """`Judge.score` of continuations of fixed prompts, with each prompt read once.

    The prompts `BOS prompt` are read once (right-padded, in batches): their keys and values
    are kept (KV cache), with the log-probabilities and final hidden state of each prompt's
    last position (which predicts the continuation's first token). `score` then reads only
    each continuation's tokens but the last after its prompt's cache, at the positions it
    has in the whole row (the prompt's padding masked out). The scores are `Judge.score`'s
    up to float rounding (a masked attention over the cache in place of a causal one over
    the row; tests/neural/test_text_measures.py: NLL to 1e-5 relative, features to 1e-5).
    A row that `Judge.score` would cut to the last block_size + 1 tokens (it loses the start
    of its prompt, so its prompt's cache does not apply) is read whole by `Judge.score`.
    Memory: the cache holds n_layer x 2 x n_embd floats per prompt token."""

    def __init__(self, judge: Judge, prompts: Sequence[str], batch_rows: int = 64):
        self.judge, self.batch_rows = judge, batch_rows
        self.prompts = list(prompts)
        tok, model = judge.tokenizer, judge.model
        self.ids = [tok.encode(p, bos=True) for p in self.prompts]
        cached = [i for i, r in enumerate(self.ids) if len(r) <= model.config.block_size]
        self.slot = {i: k for k, i in enumerate(cached)}  # prompt -> its row in the cache
        self.cache, self.last_logp, self.last_hidden = None, None, None
        if not cached:
            return
        width = max(len(self.ids[i]) for i in cached)
        layers, logp, hidden, masks = [], [], [], []
        with torch.no_grad():
            for start in range(0, len(cached), batch_rows):
                chunk = cached[start:start + batch_rows]
                ids = torch.full((len(chunk), width), tok.pad_id, dtype=torch.long)
                mask = torch.zeros(len(chunk), width, dtype=torch.bool)
                for j, i in enumerate(chunk):
                    ids[j, :len(self.ids[i])] = torch.tensor(self.ids[i])
                    mask[j, :len(self.ids[i])] = True
                out = model.forward_step(ids, attention_mask=mask)
                last = torch.tensor([len(self.ids[i]) - 1 for i in chunk])
                rows = torch.arange(len(chunk))
                logp.append(torch.log_softmax(out.logits[rows, last].float(), dim=-1))
                hidden.append(model.transformer.ln_f(out.residuals[-1][rows, last]).float())
                layers.append(out.cache.layers)
                masks.append(mask)
        self.cache = KVCache([tuple(torch.cat([c[n][m] for c in layers]) for m in (0, 1))
                              for n in range(model.config.n_layer)], torch.cat(masks))
        self.last_logp, self.last_hidden = torch.cat(logp), torch.cat(hidden)  # (N, V), (N, C)

    @torch.no_grad()
    def score(self, continuations: Sequence[str],
              stopped: Sequence[bool] | None = None) -> JudgeScores:
        """`Judge.score(prompts, continuations, stopped)`, one continuation per prompt."""
        if len(continuations) != len(self.prompts):
            raise ValueError("one prompt per continuation")
        stopped = [False] * len(self.prompts) if stopped is None else list(stopped)
        judge, tok = self.judge, self.judge.tokenizer
        model, block = judge.model, judge.model.config.block_size
        tails = [tok.encode(c, eos=bool(s)) for c, s in zip(continuations, stopped,
                                                            strict=True)]
        n = len(tails)
        nll, count = torch.zeros(n), torch.zeros(n, dtype=torch.long)
        feats = torch.zeros(n, model.config.n_embd)
        fits = [i in self.slot and len(self.ids[i]) + len(tails[i]) - 1 <= block
                for i in range(n)]
        whole = [i for i in range(n) if not fits[i]]
        if whole:
            s = judge.score([self.prompts[i] for i in whole], [continuations[i] for i in whole],
                            [stopped[i] for i in whole], self.batch_rows)
            nll[whole], count[whole], feats[whole] = s.nll, s.tokens, s.features
        # longest first: rows of a batch of similar length (less padding)
        cached = sorted((i for i in range(n) if fits[i]), key=lambda i: -len(tails[i]))
        for start in range(0, len(cached), self.batch_rows):
            chunk = cached[start:start + self.batch_rows]
            slots = torch.tensor([self.slot[i] for i in chunk])
            first = torch.tensor([tails[i][0] if tails[i] else 0 for i in chunk])
            has = torch.tensor([len(tails[i]) > 0 for i in chunk])
            lp = self.last_logp[slots].gather(1, first[:, None]).squeeze(1)  # (B,)
            total = -(lp * has)
            pooled = self.last_hidden[slots]  # (B, C)
            width = max(len(tails[i]) for i in chunk) - 1  # continuation tokens read
            if width > 0:
                ids = torch.full((len(chunk), width + 1), tok.pad_id, dtype=torch.long)
                for j, i in enumerate(chunk):
                    ids[j, :len(tails[i])] = torch.tensor(tails[i])
                read = torch.arange(width)[None, :] < torch.tensor(
                    [len(tails[i]) - 1 for i in chunk])[:, None]  # (B, T) at t: t + 1 scored
                cache = self.cache.select(slots, room=width)
                out = model.forward_step(ids[:, :width], cache=cache,
                                         attention_mask=torch.cat((cache.mask, read), dim=1))
                logp = torch.log_softmax(out.logits.float(), dim=-1)
                target_lp = logp.gather(2, ids[:, 1:, None]).squeeze(2)
                total = total - (target_lp * read).sum(1)
                hidden = model.transformer.ln_f(out.residuals[-1]).float()  # (B, T, C)
                pooled = pooled + (hidden * read[..., None]).sum(1)
            idx = torch.tensor(chunk)
            count[idx] = torch.tensor([len(tails[i]) for i in chunk])
            nll[idx] = total
            feats[idx] = pooled / count[idx].clamp(min=1)[:, None]
        return JudgeScores(nll, count, feats)
