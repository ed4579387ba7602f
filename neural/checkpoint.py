"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A model directory holds `model.safetensors` and `config.json` (the GPTConfig fields plus the
tokenizer). For a Hugging Face model (`neural.hf`) config.json names the model directory, its
weights' fingerprint and the training mode, and the weights file holds what the run trained:
nothing (frozen), every weight (full) or, as `adapter_model.safetensors` beside peft's
`adapter_config.json`, the LoRA adapters; loading refuses a model directory whose weights
changed since. A trainer checkpoint adds `trainer.safetensors` (optimizer moments, Grokfast EMA,
torch RNG states as uint8 tensors) and `trainer.json` (step, TrainConfig, python and numpy
RNG states). Every file is written atomically (temp file in the same directory, then
os.replace); trainer.json is written last and every file records the step, so a checkpoint
torn by a crash between two files is detected on load instead of silently mixed.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from .model import GPT, GPTConfig
from .tasks import Example
from .tokenizer import ByteTokenizer
from .train import ExtraLoss, TrainConfig, Trainer

FORMAT_VERSION = 1
MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's name: PeftModel.from_pretrained reads it
ADAPTER_CONFIG = "adapter_config.json"
TRAINER_TENSORS = "trainer.safetensors"
TRAINER_STATE = "trainer.json"


class CheckpointError(Exception):
    """A checkpoint directory that is missing, torn or inconsistent."""


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    except (UnicodeDecodeError, RecursionError, ValueError):
        raise CheckpointError(f"{path}: not UTF-8 JSON; the file is damaged") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object; the file is damaged")
    return data


def _read_tensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: missing")
    try:  # the file system's refusal (permissions, a directory) is not damage
        open(path, "rb").close()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror}") from None
    try:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except Exception as e:  # safetensors' errors have no common public type
        raise CheckpointError(f"{path}: unreadable safetensors file ({type(e).__name__}); "
                              "the file is damaged or truncated") from None


def _field(state: dict, key: str, path: str):
    if key not in state:
        raise CheckpointError(f"{path}: missing key '{key}'; the file is damaged")
    return state[key]


def _storage_key(t: torch.Tensor):
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` without the second name of tied (shared) tensors; safetensors refuses
    aliases."""
    seen, out = set(), {}
    for name, t in state.items():
        if _storage_key(t) in seen:
            continue
        seen.add(_storage_key(t))
        out[name] = t.detach().contiguous()
    return out


def _unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return unique_tensors(model.state_dict())


# ----------------------------------------------------------------------------------------
# model


def _weights_file(hf: dict | None) -> str:
    return ADAPTER_WEIGHTS if hf is not None and hf.get("train_mode") == "lora" else MODEL_WEIGHTS


def save_model(model: GPT, directory: str, *, tokenizer: ByteTokenizer | None = None,
               step: int | None = None) -> None:
    """Write `model.safetensors` (adapters: `adapter_model.safetensors`) and `config.json`
    into `directory`."""
    tokenizer = tokenizer or ByteTokenizer()
    meta = {"format": str(FORMAT_VERSION), "step": str(step)}
    if getattr(model, "is_hf", False):
        hf = model.source | {"model_type": model.config.model_type,
                             "train_mode": model.train_mode, "lora": model.lora_dict()}
        adapter = model.adapter_config()
        if adapter is not None:
            atomic_write_json(os.path.join(directory, ADAPTER_CONFIG), adapter)
        atomic_write_bytes(os.path.join(directory, _weights_file(hf)),
                           st_save(model.trainable_state(), metadata=meta))
        atomic_write_json(os.path.join(directory, MODEL_CONFIG),
                          {"hf": hf, "tokenizer": tokenizer.to_dict(),
                           "format": FORMAT_VERSION, "step": step})
        return
    atomic_write_bytes(os.path.join(directory, MODEL_WEIGHTS),
                       st_save(_unique_state(model), metadata=meta))
    config = model.config.to_dict() | {"tokenizer": tokenizer.to_dict(),
                                       "format": FORMAT_VERSION, "step": step}
    atomic_write_json(os.path.join(directory, MODEL_CONFIG), config)


def load_model(directory: str, *, tokenizer: ByteTokenizer | None = None,
               device: str | torch.device = "cpu") -> GPT:
    """The model saved in `directory`, on `device` (checks that its tokenizer matches
    `tokenizer`)."""
    model, _ = _load_model(directory, tokenizer, device)
    return model


def _load_model(directory, tokenizer, device="cpu"):
    tokenizer = tokenizer or ByteTokenizer()
    config_d = _read_json(os.path.join(directory, MODEL_CONFIG))
    saved_tok = config_d.get("tokenizer")
    if saved_tok is not None and saved_tok != tokenizer.to_dict():
        raise CheckpointError(f"{directory}: saved with tokenizer {saved_tok}, "
                              f"not {tokenizer.to_dict()}")
    if "hf" in config_d:
        return _load_hf(directory, config_d["hf"], device)
    config_path = os.path.join(directory, MODEL_CONFIG)
    try:
        config = GPTConfig.from_dict(config_d)
        config.check()
        model = GPT(config)
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        raise CheckpointError(f"{config_path}: not a model configuration ({e}); the file is "
                              "damaged") from None
    tensors, meta = _read_tensors(os.path.join(directory, MODEL_WEIGHTS))
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError:
        raise CheckpointError(f"{directory}: the weights do not have the shapes config.json "
                              "gives; the model is damaged") from None
    # a name absent from the file is fine only if it aliases a loaded tensor (tied weights)
    full = model.state_dict()
    loaded = {_storage_key(full[n]) for n in tensors if n in full}
    absent = [n for n in missing if _storage_key(full[n]) not in loaded]
    if unexpected or absent:
        raise CheckpointError(f"{directory}: weights do not match config.json "
                              f"(missing {sorted(absent)}, unexpected {sorted(unexpected)})")
    return model.to(device), meta.get("step")


def _load_hf(directory: str, hf: dict, device):
    """The Hugging Face model a run's config.json names, with what the run trained of it."""
    from .hf import HFError, HFModel, LoraSettings, check_directory, fingerprint

    where = os.path.join(directory, MODEL_CONFIG)
    if not isinstance(hf, dict):
        raise CheckpointError(f"{where}: 'hf' is not a JSON object; the file is damaged")
    path, recorded = _field(hf, "path", where), _field(hf, "fingerprint", where)
    try:
        check_directory(path)
        now = fingerprint(path)
        if now != recorded:
            raise CheckpointError(
                f"hf:{path}: the model's weights changed since this run was made (fingerprint "
                f"{recorded[:12]}..., now {now[:12]}...); put the original weights back, or "
                "start a new run")
        lora = LoraSettings(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in (hf.get("lora") or {}).items()})
        model = HFModel.from_pretrained(path, device=device, train_mode=hf.get("train_mode",
                                                                               "frozen"),
                                        lora=lora)
        tensors, meta = _read_tensors(os.path.join(directory, _weights_file(hf)))
        model.load_trainable_state(tensors)
    except (HFError, TypeError) as e:
        raise CheckpointError(f"{directory}: {e}") from None
    return model, meta.get("step")


# ----------------------------------------------------------------------------------------
# trainer


def save_checkpoint(trainer: Trainer, directory: str) -> None:
    """Everything needed to continue `trainer` bit for bit: model, optimizer, Grokfast EMA,
    batch sampler, global RNGs (python, numpy, torch CPU), step."""
    step = trainer.step_num
    save_model(trainer.model, directory, tokenizer=trainer.tokenizer, step=step)
    tensors: dict[str, torch.Tensor] = {}
    index = {id(p): i for i, p in enumerate(trainer.params)}
    for p, state in trainer.optimizer.state.items():
        for key, value in state.items():
            if not torch.is_tensor(value):
                value = torch.tensor(value)
            tensors[f"optim.{index[id(p)]}.{key}"] = value.detach().contiguous()
    for i, ema in enumerate(trainer.grokfast_ema or []):
        tensors[f"grokfast.{i}"] = ema.contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    device = next((p.device for p in trainer.model.parameters()), torch.device("cpu"))
    if device.type == "cuda":  # dropout draws on the GPU
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    tensors["rng.sampler"] = trainer.generator.get_state()
    meta = {"format": str(FORMAT_VERSION), "step": str(step)}
    atomic_write_bytes(os.path.join(directory, TRAINER_TENSORS), st_save(tensors, metadata=meta))
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "format": FORMAT_VERSION,
        "step": step,
        "train_config": trainer.config.to_dict(),
        "grokfast_len": len(trainer.grokfast_ema) if trainer.grokfast_ema is not None else None,
        "rng": {
            "python": [py_version, list(py_state), py_gauss],
            "numpy": [np_kind, np_keys.tolist(), int(np_pos), int(np_has_gauss),
                      float(np_gauss)],
        },
    }
    atomic_write_json(os.path.join(directory, TRAINER_STATE), state)


def load_checkpoint(directory: str, train_examples: Sequence[Example], *,
                    extra_loss: ExtraLoss | None = None,
                    tokenizer: ByteTokenizer | None = None,
                    device: str | torch.device = "cpu") -> Trainer:
    """A Trainer that continues exactly where the one saved in `directory` stopped, its model
    on `device` (the optimizer's moments follow it there). Also restores the global python,
    numpy and torch RNG states. `train_examples` must be the same list the saved trainer used
    (examples are data, not state)."""
    where = os.path.join(directory, TRAINER_STATE)
    state = _read_json(where)
    step = _field(state, "step", where)
    model, model_step = _load_model(directory, tokenizer, device)
    tensors, meta = _read_tensors(os.path.join(directory, TRAINER_TENSORS))
    if model_step != str(step) or meta.get("step") != str(step):
        raise CheckpointError(f"{directory}: torn checkpoint (trainer.json at step {step}, "
                              f"weights at {model_step}, optimizer at {meta.get('step')})")
    try:
        config = TrainConfig.from_dict(state["train_config"])
        config.check()
        trainer = Trainer(model, tokenizer or ByteTokenizer(), train_examples, config,
                          extra_loss=extra_loss)
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for name, t in tensors.items():
            if name.startswith("optim."):
                _, i, key = name.split(".", 2)
                opt_state.setdefault(int(i), {})[key] = t
        if opt_state:
            groups = trainer.optimizer.state_dict()["param_groups"]
            trainer.optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        if state.get("grokfast_len") is not None:
            trainer.grokfast_ema = [tensors[f"grokfast.{i}"] for i in range(state["grokfast_len"])]
        trainer.generator.set_state(tensors["rng.sampler"])
        trainer.step_num = step
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.device(device).type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], torch.device(device))
        py_version, py_state, py_gauss = state["rng"]["python"]
        random.setstate((py_version, tuple(py_state), py_gauss))
        np_kind, np_keys, np_pos, np_has_gauss, np_gauss = state["rng"]["numpy"]
        np.random.set_state((np_kind, np.array(np_keys, dtype=np.uint32), np_pos, np_has_gauss,
                             np_gauss))
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{directory}: damaged trainer checkpoint ({type(e).__name__}: "
                              f"{e})") from None
    return trainer
