"""Measures of generated text (neural.text_measures): values worked out by hand."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neural import GPT, GPTConfig, TrainConfig
from neural.tasks import Example
from neural.text_measures import (
    Judge,
    JudgeConfig,
    JudgeScores,
    distinct_n,
    diversity,
    ends_in_loop,
    loop_share,
    mauve_score,
    perplexity,
    rep_n,
    self_bleu,
    zipf_coefficient,
)


def test_rep_n_and_diversity_by_hand():
    """"a b a b": bigrams ab, ba, ab (2 unique of 3); "c d": cd (1 of 1) -> rep-2 =
    100 (1 - 3/4) = 25; trigrams aba, bab (2 of 2) -> rep-3 = 0; diversity = 0.75."""
    texts = ["a b a b", "c d"]
    assert rep_n(texts, 2) == pytest.approx(25.0)
    assert rep_n(texts, 3) == 0.0
    assert rep_n(texts, 4) == 0.0
    assert diversity(texts) == pytest.approx(0.75)
    assert rep_n(["a a a a a"], 2) == pytest.approx(75.0)  # 1 unique of 4
    assert rep_n(["one", ""], 2) == 0.0  # no bigram at all


def test_rep_n_counts_within_each_text():
    """The same text twice repeats nothing within either text (SimCTG sums per text)."""
    assert rep_n(["to be or not", "to be or not"], 2) == 0.0
    assert distinct_n(["to be or not", "to be or not"], 2) == pytest.approx(0.5)


def test_distinct_n_by_hand():
    """["a b a b", "a b"]: bigrams ab, ba, ab, ab -> 2 distinct of 4; words 2 of 6."""
    texts = ["a b a b", "a b"]
    assert distinct_n(texts, 2) == pytest.approx(0.5)
    assert distinct_n(texts, 1) == pytest.approx(2 / 6)
    assert distinct_n([""], 1) == 0.0


def test_words_are_whitespace_separated():
    assert rep_n(["a  b\na\tb"], 2) == rep_n(["a b a b"], 2)


def test_zipf_coefficient_by_hand():
    """Counts 6, 3, 2 are 6 / rank exactly: s = 1. Counts 4, 1: slope log(1/4) / log 2 = -2."""
    assert zipf_coefficient(["a " * 6 + "b " * 3 + "c c"]) == pytest.approx(1.0)
    assert zipf_coefficient(["x x x", "x y"]) == pytest.approx(2.0)
    assert math.isnan(zipf_coefficient(["same same"]))


def test_ends_in_loop_by_hand():
    assert ends_in_loop("the cat " * 5)  # period 8 over 40 bytes
    assert ends_in_loop("Once upon a time " + "a" * 32)  # period 1
    assert not ends_in_loop("the cat the cat the c")  # 21 bytes < 32
    assert ends_in_loop("the cat the cat the c", min_bytes=16)  # cut mid-phrase: still a loop
    assert not ends_in_loop("the cat the c", min_bytes=8)  # under two whole periods
    assert not ends_in_loop("To be, or not to be, that is the question: whether 'tis nobler")
    assert loop_share(["ab" * 20, "no loop here at all, none at all, really none"]) == 50.0
    assert loop_share([]) == 0.0


@given(st.text(max_size=20), st.text(min_size=1, max_size=12), st.integers(2, 6))
def test_a_repeated_tail_is_a_loop(head, phrase, copies):
    """Whatever comes before, a tail of >= 2 copies of a phrase covering >= min_bytes loops."""
    tail = phrase * copies
    assert ends_in_loop(head + tail, min_bytes=len(tail.encode("utf-8")))


def test_self_bleu_by_hand():
    """"a b c d" vs "a b c e": precisions 3/4, 2/3, 1/2 and 0/1 -> 1/2 by exponential
    smoothing; brevity 1: BLEU = (3/4 x 2/3 x 1/2 x 1/2)^(1/4) = 0.125^0.25 both ways."""
    assert self_bleu(["a b c d", "a b c e"]) == pytest.approx(100 * 0.125 ** 0.25, abs=1e-6)
    assert self_bleu(["x y z w"] * 3) == pytest.approx(100.0)
    assert self_bleu(["a b c d", "e f g h"]) == 0.0
    assert self_bleu(["alone"]) == 0.0


def test_mauve_same_and_apart():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(60, 8, generator=g)
    assert mauve_score(p, p) == pytest.approx(1.0)
    assert mauve_score(p, p + 50.0) < 0.05


def test_mauve_over_seeds_is_the_mean_of_each_quantization():
    g = torch.Generator().manual_seed(1)
    p, q = torch.randn(80, 8, generator=g), torch.randn(80, 8, generator=g) + 0.5
    each = [mauve_score(p, q, seed=s) for s in (7, 8, 9)]
    assert len(set(each)) > 1  # the quantizations differ
    assert mauve_score(p, q, seed=7, seeds=3) == pytest.approx(sum(each) / 3)


def test_perplexity_pools_tokens():
    s = JudgeScores(torch.tensor([2.0, 4.0]), torch.tensor([1, 3]), torch.zeros(2, 1))
    assert perplexity(s) == pytest.approx(math.exp(1.5))


def tiny_judge():
    torch.manual_seed(0)
    return Judge(GPT(GPTConfig(block_size=24, n_layer=1, n_head=2, n_embd=8)))


def test_judge_nll_is_the_models_and_padding_free():
    """Each continuation's NLL is minus the sum of the model's log-probabilities of its bytes
    (and EOS when it stopped) after `BOS prompt`, whatever else shares the batch."""
    judge = tiny_judge()
    tok = judge.tokenizer
    prompts, conts, stopped = ["ab", "hello ", "x"], ["cd", "wor", ""], [True, False, True]
    s = judge.score(prompts, conts, stopped)
    assert s.tokens.tolist() == [3, 3, 1]
    for i, (p, c, stop) in enumerate(zip(prompts, conts, stopped, strict=True)):
        row = tok.encode(p, bos=True) + tok.encode(c, eos=stop)
        logits = judge.model.forward_step(torch.tensor([row])).logits[0]
        lp = torch.log_softmax(logits, -1)
        first = len(tok.encode(p, bos=True))
        want = -sum(lp[t - 1, row[t]] for t in range(first, len(row)))
        assert float(s.nll[i]) == pytest.approx(float(want), abs=1e-4)
        alone = judge.score([p], [c], [stop])
        assert float(alone.nll[0]) == pytest.approx(float(s.nll[i]), abs=1e-4)
        assert torch.allclose(alone.features[0], s.features[i], atol=1e-5)


def test_judge_keeps_the_last_block_of_long_rows():
    judge = tiny_judge()  # block_size 24
    s = judge.score(["p" * 40], ["q" * 10])
    assert s.tokens.tolist() == [10]
    s = judge.score(["p"], ["q" * 40])
    assert s.tokens.tolist() == [24]  # the model reads 24 tokens, each predicting a byte


def sharp_judge(positions: str):
    """A 2-layer judge of block 24 with weights large enough that positions and every
    earlier token move its reading."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=24, n_layer=2, n_head=2, n_embd=8, positions=positions))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return Judge(model)


ROW = st.tuples(st.text(alphabet="ab \n\u00e9", max_size=30),  # prompt: some past the block
                st.text(alphabet="ab \n\u00e9", max_size=30),  # continuation
                st.booleans())  # stopped


@pytest.mark.parametrize("positions", ["learned", "rope"])
@settings(max_examples=50)  # each example reads its rows three times
@given(rows=st.lists(ROW, min_size=1, max_size=9), batch_rows=st.integers(1, 4))
def test_reader_reads_as_score_does(positions, rows, batch_rows):
    """`Judge.reader(prompts).score` (each prompt read once, continuations read after its
    cache) equals `Judge.score` (each row read whole) to float rounding: rows that fit the
    block and rows cut to it (prompts longer than the block, continuations that push the
    start of the prompt out), stopped or not, empty continuations, any batching."""
    judge = sharp_judge(positions)
    prompts, conts, stopped = (list(x) for x in zip(*rows, strict=True))
    want = judge.score(prompts, conts, stopped, batch_rows)
    reader = judge.reader(prompts, batch_rows)
    for _ in range(2):  # the cache is left as it was by a reading
        got = reader.score(conts, stopped)
        assert torch.equal(got.tokens, want.tokens)
        assert got.nll.tolist() == pytest.approx(want.nll.tolist(), rel=1e-5, abs=1e-6)
        assert torch.allclose(got.features, want.features, rtol=0, atol=1e-5)


def test_reader_uses_its_cache_where_rows_fit():
    """Rows that fit the block are read after the prompt's cache (so a cache altered on
    purpose changes their reading); a row cut to the block is read whole (unchanged)."""
    judge = sharp_judge("rope")  # block 24
    prompts, conts = ["ab a", "b" * 10], ["ba b", "a" * 20]  # 5 + 4 - 1 fits; 11 + 20 - 1 not
    reader = judge.reader(prompts)
    want = reader.score(conts)
    reader.cache.layers = [(k + 1.0, v) for k, v in reader.cache.layers]
    got = reader.score(conts)
    assert float(got.nll[0]) != pytest.approx(float(want.nll[0]), rel=1e-3)
    assert float(got.nll[1]) == float(want.nll[1])
    with pytest.raises(ValueError, match="one prompt per continuation"):
        reader.score(conts[:1])


def test_judge_is_cached_by_data_and_settings(tmp_path):
    examples = [Example("ab", "cd"), Example("ef", "gh")] * 4
    cfg = JudgeConfig(GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=8),
                      TrainConfig(steps=3, batch_size=4, warmup_steps=1))
    trained = []
    a = Judge.load_or_train(examples, cfg, tmp_path, on_train=trained.append)
    b = Judge.load_or_train(examples, cfg, tmp_path, on_train=trained.append)
    assert len(trained) == 1 and trained[0].parent == tmp_path / "judges"
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not any(p.requires_grad for p in b.model.parameters())
    Judge.load_or_train(examples[:2], cfg, tmp_path, on_train=trained.append)
    assert len(trained) == 2  # other data: another judge


@pytest.mark.parametrize("damage", [lambda d: (d / "config.json").unlink(),
                                    lambda d: (d / "model.safetensors").write_bytes(b"\0" * 9)])
def test_a_cached_judge_that_cannot_be_read_is_trained_again(tmp_path, damage):
    """A judge cache killed between its two files (weights written, config.json not) or cut
    short once stopped every text run on that data with 'config.json: missing'; it is a
    cache miss: the same judge is trained again and saved over it."""
    examples = [Example("ab", "cd"), Example("ef", "gh")] * 4
    cfg = JudgeConfig(GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=8),
                      TrainConfig(steps=3, batch_size=4, warmup_steps=1))
    trained = []
    a = Judge.load_or_train(examples, cfg, tmp_path, on_train=trained.append)
    damage(trained[0])
    b = Judge.load_or_train(examples, cfg, tmp_path, on_train=trained.append)
    assert trained == [trained[0]] * 2
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    Judge.load_or_train(examples, cfg, tmp_path, on_train=trained.append)
    assert len(trained) == 2  # saved whole again: read from the cache
