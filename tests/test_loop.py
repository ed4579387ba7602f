"""Pieces of the co-evolution loop, in process: the champion's loss inside model training,
seed fitting, configuration."""

import re

import pytest
import torch
from conftest import TINY

import engine_dsl
from engine_dsl import DslError, Type, read
from evolution.loop import GREEDY, ChampionLoss, fit_to_model
from evolution.settings import ConfigError, resolve
from neural import GPT, ByteTokenizer, GPTConfig, get_task, make_batch


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32))
    task = get_task("addition", difficulty=2, size=200)
    batch = make_batch(ByteTokenizer(), task.train[:8], 32)
    return model, batch


def test_greedy_champion_loss_is_the_answer_lm_loss(model_and_batch):
    """Relaxed greedy is log_softmax(logits): its loss equals the model's answer-token loss."""
    model, batch = model_and_batch
    _, lm = model(batch.inputs, batch.targets(answer_only=True))
    assert torch.allclose(ChampionLoss(GREEDY)(model, batch), lm, atol=1e-5)


@pytest.mark.parametrize("program", [
    "(sample (top-p (temperature (repetition-penalty logits 1.2) 0.7) 0.9))",
    "(vote 3 (sample (mix (layer 1) (gated #(0.0 1.0 2.0 3.0)) 0.3)))",
    "(greedy (if (< (entropy logits) 1.0) (layer-mix #(0.0 1.0)) (top-k logits 3)))",
])
def test_champion_loss_gradient_reaches_the_model(model_and_batch, program):
    model, batch = model_and_batch
    model.zero_grad()
    loss = ChampionLoss(engine_dsl.read_expr(program, Type.DECODER))(model, batch)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_seeds_are_fitted_to_the_model():
    (d,) = read("(define a (greedy (mix (layer-mix #(1.0 2.0)) (gated #(3.0)) 0.5)))", "a.scm")
    fitted = fit_to_model(d, 4, 2)
    mix = fitted.body.args[0]
    assert mix.args[0].args[0].values == (1.0, 2.0, 1.0, 2.0)
    assert mix.args[1].args[0].values == (3.0,) * 8
    (deep,) = read("(define b (greedy (layer 6)))", "b.scm")
    with pytest.raises(DslError, match=r"b.scm:1:19: error: \(layer 6\) but the model has 4"):
        fit_to_model(deep, 4, 2)


def test_nested_defaults_survive_partial_sections():
    cfg = resolve(None, ["evolution.tune_steps=3"])
    assert cfg.evolution.population_size == 16 and cfg.evolution.tune_steps == 3
    with pytest.raises(ConfigError, match="did you mean 'loop.train_steps'"):
        resolve(None, ["loop.train_step=3"])
    with pytest.raises(ConfigError, match="exceeds the cap model.block_size"):
        resolve(None, ["loop.max_new_tokens=500"])



@pytest.mark.parametrize("setting, message", [
    ("evolution.population_size=0", "evolution.population_size must be >= 1, found 0"),
    ("evolution.tune_lr=-1", "evolution.tune_lr must be finite and > 0, found -1.0"),
    ("evolution.cxpb=0.7", "evolution.cxpb and evolution.mutpb must be probabilities with "
                           "evolution.cxpb + evolution.mutpb <= 1, found 0.7 and 0.5"),
    ("evolution.init_heights=[2, 18]", "evolution.init_heights must satisfy 1 <= lo <= hi <= "
                                      "evolution.limits.max_height = 17, found [2, 18]"),
    ("evolution.selection=best", "evolution.selection must be one of nsga2, tournament, found "
                                 "'best'"),
    ("evolution.tune_lr=nan", "tune_lr must be finite"),
    ("evolution.constant_sigma=0", "constant_sigma must be finite and > 0"),
    ("evolution.mutant_fraction=1.5", "mutant_fraction must be in [0, 1]"),
    ("evolution.mutation_heights=[3, 1]", "mutation_heights must satisfy 0 <= lo <= hi"),
    ("evolution.mutation_weights={uniform = -1, shrink = 1}",
     "evolution.mutation_weights: every weight must be >= 0"),
    ("task.answer_regex=a{99999999999}", "task.answer_regex: not a regular expression (a "
                                         "repetition count too large)"),
    ("task.answer_regex=" + "(" * 5000 + ")" * 5000, "not a regular expression (nested too "
                                                     "deeply), found '(((("),
    ("run..seed=1", "--set expects section.key=value, found 'run..seed=1'"),
    ("task.curriculum=true", "task.curriculum = true moves a built-in task's difficulty "
                             "(addition, running-sum, reverse, sort, copy); task.name is "
                             "'jsonl:d.jsonl'"),
    ("task.dry_breakers=['\\n', '']", "task.dry_breakers: each breaker must be 1 to 40 bytes"),
    # every number in its domain, up front (issue 16, item 7)
    ("loop.program_lambda=nan", "loop.program_lambda must be finite, found nan"),
    ("train.learning_rate=inf", "train.learning_rate must be finite, found inf"),
    ("model.n_head=3", "model.n_embd = 128 must be a multiple of model.n_head = 3"),
    ("model.n_embd=0", "model.n_embd must be in [1, 16384], found 0"),
    ("model.positions=absolute", "model.positions must be one of learned, rope, found "
                                 "'absolute'"),
    ("model.vocab_size=10", "model.vocab_size must be >= 259"),
    ("model.dropout=1.5", "model.dropout must be in [0.0, 1.0), found 1.5"),
    ("train.batch_size=0", "train.batch_size must be in [1, 65536], found 0"),
    ("train.beta1=1.5", "train.beta1 must be in [0.0, 1.0), found 1.5"),
    ("loop.valid_prompts=0", "loop.valid_prompts must be in [1, 1000000000], found 0"),
    ("loop.test_prompts=0", "loop.test_prompts must be in [1, 1000000000], found 0"),
    ("run.seed=18446744073709551616", "run.seed must be in [0, 4294967295]"),
    ("evolution.limits.max_votes=0", "evolution.limits.max_votes must be in [1, "),
    # a count no run comes near is refused up front, not a silent endless run
    ("evolution.population_size=99999999999999999999", "evolution.population_size must be in "
                                                       "[1, 1000000000], found 9999999999999"),
    ("evolution.tune_steps=99999999999999999999", "evolution.tune_steps must be in [0, "),
    ("evolution.offspring_size=99999999999999999999", "evolution.offspring_size must be in "),
    ("model.n_embd=16384", "model.n_layer = 3, model.n_embd = 16384: a model of 9.67e+09 "
                           "parameters exceeds the cap of 1e+09"),
    ("hf.train_mode=lora", "hf.train_mode = 'lora' applies to a Hugging Face model "
                           "(--model hf:DIR)"),
    ("loop.decode_memory_mb=100", "loop.decode_memory_mb = 100: decoding up to "
                                  "evolution.limits.max_votes = 16 answers for each of 500 "
                                  "prompts takes about 3032 MB"),  # loop.test_prompts
])
def test_settings_out_of_range_name_section_and_key(setting, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve(None, [setting, "task.name=jsonl:d.jsonl"] if "curriculum" in setting
                else [setting])


def test_tuning_workers_are_at_most_the_cores(monkeypatch):
    """loop.workers = 1024 on a small machine once spawned 1024 torch processes (killed for
    memory); the pool has at most one per core, which changes no result."""
    import evolution.evaluation
    from evolution.loop import CoEvolution

    monkeypatch.setattr(evolution.evaluation, "ProcessMap", lambda n: ("pool", n))
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    run = CoEvolution.__new__(CoEvolution)
    run.cfg = resolve(None, ["loop.workers=1024"])
    assert run._map == ("pool", 3)
    run._pool, run.cfg = None, resolve(None, ["loop.workers=2"])
    assert run._map == ("pool", 2)

@pytest.mark.parametrize("text, message", [
    ("[[run]]\ngenerations = 1\n", "run must be a table, found [{'generations': 1}]"),
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", "c.toml: arrays or tables nested too deeply"),
    ("[task]\nname = \"jsonl:a\\u0000b\"\n", "'a\\x00b': cannot read file: a NUL byte in its "
                                             "name"),
    ("[task]\nname = \"jsonl:\"\n", "no file name: give jsonl:PATH or text:PATH"),
])
def test_a_config_file_of_any_shape_is_one_line(tmp_path, text, message):
    """A config file an editor or a script could write is read or refused in one line
    (`--set` applies after the file: a section the file made a list is named as such)."""
    from conftest import cli

    (tmp_path / "c.toml").write_text(text)
    proc = cli("evolve", "--out", tmp_path / "r", "--config", tmp_path / "c.toml",
               "--set", "run.generations=0", check=1)
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_byte_order_mark_before_a_config_file_is_read_past(tmp_path):
    (tmp_path / "c.toml").write_bytes(b"\xef\xbb\xbf[run]\ngenerations = 7\n")
    assert resolve(str(tmp_path / "c.toml")).run.generations == 7
    with pytest.raises(ConfigError, match="--set run.seeds: a value nested too deeply"):
        resolve(None, ["run.seeds=" + "[" * 5000 + "]" * 5000])


def _generation_1(path, sets, held_out=None, monkeypatch=None):
    """The model's weights and the log entry after generation 1 of a tiny run; `held_out`:
    the losses the guard is made to see (plain, then co-trained)."""
    from evolution.loop import CoEvolution
    from evolution.rundir import RunDir

    if held_out is not None:
        losses = iter(held_out)
        monkeypatch.setattr(CoEvolution, "held_out_loss", lambda self: next(losses))
    run = CoEvolution.start(resolve(TINY, ["run.generations=1", *sets]), RunDir(path))
    try:
        run.generation(0)
        entry = run.generation(1)
        return [p.detach().clone() for p in run.model.parameters()], entry
    finally:
        run.close()


def test_the_guard_keeps_co_training_only_where_the_held_out_loss_allows(tmp_path,
                                                                          monkeypatch):
    """loop.program_guard: where the co-trained model's held-out loss exceeds the plain
    one's by more than the tolerance, the generation goes on with exactly the model plain
    training (lambda 0) gives; else with exactly the model unguarded co-training gives."""
    plain, _ = _generation_1(tmp_path / "plain", ["loop.program_lambda=0"])
    co, _ = _generation_1(tmp_path / "co", ["loop.program_lambda=0.5",
                                            "loop.program_guard=false"])
    assert any(not torch.equal(a, b) for a, b in zip(plain, co, strict=True))
    lam = "loop.program_lambda=0.5"
    cases = [([lam], (0.5, 0.7), plain, "plain"),
             ([lam], (0.7, 0.5), co, "co-trained"),
             ([lam, "loop.guard_tolerance=0.25"], (0.5, 0.7), co, "co-trained")]
    for k, (sets, losses, expected, kept) in enumerate(cases):
        weights, entry = _generation_1(tmp_path / f"guarded{k}", sets, losses, monkeypatch)
        assert entry["model"]["guard"] == {"plain_loss": losses[0], "co_loss": losses[1],
                                           "kept": kept}
        assert all(torch.equal(a, b) for a, b in zip(weights, expected, strict=True))


def test_the_guard_compares_the_answer_loss_of_the_valid_prompts(tmp_path):
    """held_out_loss: the model's mean next-token loss over the answer tokens (and the stop)
    of the valid prompts, worked out here from its logits."""
    from evolution.loop import CoEvolution
    from evolution.rundir import RunDir

    run = CoEvolution.start(resolve(TINY, []), RunDir(tmp_path / "r"))
    try:
        tok, total, count = ByteTokenizer(), 0.0, 0
        for e in run.task.valid[:run.cfg.loop.valid_prompts]:
            prompt, answer = tok.encode(e.input, bos=True), tok.encode(e.output) + [tok.eos_id]
            ids = torch.tensor([prompt + answer])
            with torch.no_grad():
                logits, _ = run.model(ids[:, :-1])
            logp = torch.log_softmax(logits[0], dim=-1)
            for k in range(len(answer)):
                total -= float(logp[len(prompt) - 1 + k, answer[k]])
                count += 1
        assert run.held_out_loss() == pytest.approx(total / count, rel=1e-5)
    finally:
        run.close()


def test_a_run_directory_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    """Config and seed copies appear together: a failure while they are written (as a kill
    would) leaves no run, and a later attempt at the same path succeeds."""
    import evolution.rundir as rundir
    from evolution.rundir import RunDir, RunError

    seeds = {"a.scm": b"(define a greedy)\n", "b.scm": b"(define b greedy)\n"}
    real_write, written = rundir.atomic_write, []

    def failing_write(path, data):
        if written:
            raise KeyboardInterrupt
        written.append(path)
        real_write(path, data)

    run = RunDir(tmp_path / "runs" / "x")
    monkeypatch.setattr(rundir, "atomic_write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        run.create("[run]\n", seeds)
    assert not run.path.exists() and not run.is_run()
    monkeypatch.setattr(rundir, "atomic_write", real_write)
    run.create("[run]\n", seeds)
    assert run.config.read_text() == "[run]\n"
    assert {p.name: p.read_bytes() for p in run.seeds.iterdir()} == seeds
    assert sorted(p.name for p in run.path.parent.iterdir()) == ["x"]
    with pytest.raises(RunError, match="already holds a run"):
        run.create("[run]\n", seeds)
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    with pytest.raises(RunError, match="is a file, not a directory"):
        RunDir(a_file).create("[run]\n", seeds)
    with pytest.raises(RunError, match="a file, not a run directory"):
        RunDir(a_file).require_run()
    assert a_file.read_text() == "mine\n"


def test_shipped_seeds_a_smaller_model_cannot_run_are_left_out(tmp_path):
    """With the shipped seeds (no --seeds), a one-block model runs: the seeds reading a block
    it lacks are left out with a note; a user's own such seed stays an error at its place."""
    from conftest import cli

    sets = ["--set", "model.n_layer=1", "--set", "run.generations=0", "--set", "run.seeds=[]"]
    proc = cli("evolve", "--out", tmp_path / "run", "--config", TINY, *sets, check=0)
    assert "note: shipped seed layer-blend left out: (layer 2) but the model has 1 blocks" \
        in proc.stdout + proc.stderr
    mine = tmp_path / "deep.scm"
    mine.write_text("(define deep (greedy (layer 2)))\n")
    proc = cli("evolve", "--out", tmp_path / "mine", "--config", TINY, *sets[:4],
               "--seeds", mine, check=1)
    assert proc.stderr.strip() == f"{mine}:1:22: error: (layer 2) but the model has 1 blocks"
    assert not (tmp_path / "mine").exists()
