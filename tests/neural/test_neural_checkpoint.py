"""Checkpoints: safetensors + JSON only, atomic, and an exact resume."""

import json
import os

import pytest
import torch

from neural import (
    GPT,
    ByteTokenizer,
    CheckpointError,
    GPTConfig,
    TrainConfig,
    Trainer,
    get_task,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)

tok = ByteTokenizer()


@pytest.fixture(scope="module")
def examples():
    return get_task("reverse", difficulty=4, size=200).train


def make_trainer(examples):
    torch.manual_seed(0)
    # dropout and Grokfast on, so the torch RNG and the EMA must be restored too
    model = GPT(GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1))
    cfg = TrainConfig(steps=10, batch_size=4, warmup_steps=2, grokfast_lambda=1.0, seed=3)
    return Trainer(model, tok, examples, cfg)


def test_resume_is_bit_for_bit(tmp_path, examples):
    """Train 3 steps, save, train 3 more; loading the checkpoint and training 3 more gives
    identical parameters (torch.equal) and identical losses."""
    a = make_trainer(examples)
    a.train(3)
    save_checkpoint(a, str(tmp_path))
    losses_a = [m["loss"] for m in a.train(3)]
    torch.manual_seed(12345)  # disturb the global RNG: loading must restore it
    b = load_checkpoint(str(tmp_path), examples)
    assert b.step_num == 3
    losses_b = [m["loss"] for m in b.train(3)]
    assert losses_a == losses_b
    for (n, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q), n


def test_checkpoint_holds_no_pickle_and_no_temp_files(tmp_path, examples):
    """A checkpoint is exactly two safetensors files and two JSON files."""
    t = make_trainer(examples)
    t.train(1)
    save_checkpoint(t, str(tmp_path))
    save_checkpoint(t, str(tmp_path))  # overwriting is fine
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors",
                                             "trainer.json", "trainer.safetensors"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["n_layer"] == 2 and config["tokenizer"]["vocab_size"] == 259


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_model_round_trip(tmp_path, positions):
    """save_model/load_model keep the config and give the same logits (tied weights too)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=16, positions=positions))
    save_model(model, str(tmp_path / "m"))
    back = load_model(str(tmp_path / "m"))
    assert back.config == model.config
    assert back.lm_head.weight is back.transformer.wte.weight
    ids = torch.randint(0, 256, (2, 5))
    assert torch.equal(back.forward_step(ids).logits, model.forward_step(ids).logits)


def test_a_model_saved_before_positions_existed_loads_with_learned_positions(tmp_path):
    """config.json without "positions" (older runs) is a model with a position table."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_model(model, str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    del config["positions"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    back = load_model(str(tmp_path))
    assert back.config.positions == "learned"
    ids = torch.randint(0, 256, (2, 5))
    assert torch.equal(back.forward_step(ids).logits, model.forward_step(ids).logits)


def test_torn_checkpoint_is_detected(tmp_path, examples):
    """Files from two different steps are refused with CheckpointError."""
    t = make_trainer(examples)
    save_checkpoint(t, str(tmp_path))
    t.train(1)
    save_model(t.model, str(tmp_path), step=t.step_num)  # weights moved on, trainer not
    with pytest.raises(CheckpointError, match="torn"):
        load_checkpoint(str(tmp_path), examples)


def test_missing_checkpoint_is_a_clear_error(tmp_path, examples):
    """Loading from an empty directory names the missing file."""
    with pytest.raises(CheckpointError, match="trainer.json: missing"):
        load_checkpoint(str(tmp_path), examples)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(batch_size=0),
     r"\(ValueError: batch_size is outside its domain, found 0\)"),
    (lambda c: c.update(learning_rate="x"), r"learning_rate is outside its domain, found 'x'"),
    (lambda c: c.update(beta2=float("nan")), r"beta2 is outside its domain, found nan"),
    (lambda c: c.update(answer_only=1), r"answer_only is outside its domain, found 1"),
])
def test_a_damaged_training_configuration_is_named_before_training(tmp_path, examples, change,
                                                                  message):
    """trainer.json's train_config is checked when read (a batch size of 0 was an internal
    error at the first step, a list an AttributeError)."""
    save_checkpoint(make_trainer(examples), str(tmp_path))
    path = tmp_path / "trainer.json"
    state = json.loads(path.read_text())
    change(state["train_config"])
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=f"damaged trainer checkpoint .*{message}"):
        load_checkpoint(str(tmp_path), examples)
    state["train_config"] = [1]
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="a training configuration is a JSON object"):
        load_checkpoint(str(tmp_path), examples)
