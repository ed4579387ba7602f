"""Layer 1 of Echo Forge: the GPT, byte tokenizer, tasks, trainer and checkpoints.

Never imports engine_dsl or evolution; the GPT satisfies engine_dsl's model protocol
structurally (`forward_step`, `lens`, `n_layer`, `n_head`, `vocab_size`).
"""

from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)
from .model import GPT, IGNORE_INDEX, GPTConfig, KVCache, StepOutput
from .tasks import (
    BUILTIN_TASKS,
    Batch,
    Curriculum,
    DataError,
    Example,
    Task,
    get_task,
    make_batch,
    make_prompt_batch,
    split_of,
)
from .tokenizer import ByteTokenizer
from .train import TrainConfig, Trainer, greedy_accuracy, greedy_decode, lr_at

__all__ = [
    "BUILTIN_TASKS",
    "Batch",
    "ByteTokenizer",
    "CheckpointError",
    "Curriculum",
    "DataError",
    "Example",
    "GPT",
    "GPTConfig",
    "IGNORE_INDEX",
    "KVCache",
    "StepOutput",
    "Task",
    "TrainConfig",
    "Trainer",
    "get_task",
    "greedy_accuracy",
    "greedy_decode",
    "load_checkpoint",
    "load_model",
    "lr_at",
    "make_batch",
    "make_prompt_batch",
    "save_checkpoint",
    "save_model",
    "split_of",
]
