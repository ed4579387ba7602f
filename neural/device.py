"""Where models run: `--device cpu|cuda|auto`.

    device = resolve_device("auto")     # cuda when torch sees a GPU, else cpu

`cuda` on a machine without a usable GPU is a `DeviceError` (one line, no traceback). On
CUDA, runs are made reproducible per device: deterministic algorithms (and the cuBLAS
workspace setting they need, set before CUDA starts), so the same seed on the same GPU model
and software gives the same run. Different devices round floats differently: a run resumed
on another device continues correctly, but its later generations need not equal an
uninterrupted run on the first device.
"""

from __future__ import annotations

import os

import torch

DEVICES = ("cpu", "cuda", "auto")


class DeviceError(Exception):
    """A device that cannot be used here; `str()` is one line."""


def check_device_name(name: str) -> None:
    """DeviceError unless `name` is cpu, cuda, cuda:N or auto (whether it is here or not)."""
    kind, _, index = name.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise DeviceError(f"device '{name}': expected cpu, cuda, cuda:N or auto")


def resolve_device(name: str) -> torch.device:
    """The torch device for `name` ("cpu", "cuda", "cuda:N" or "auto")."""
    check_device_name(name)
    kind, _, index = name.partition(":")
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        built = "without CUDA" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}"
        raise DeviceError(f"device '{name}': CUDA is not available on this machine (torch "
                          f"{torch.__version__}, built {built}); use --device cpu or auto")
    n = torch.cuda.device_count()
    if index and int(index) >= n:
        raise DeviceError(f"device '{name}': this machine has {n} CUDA device"
                          f"{'s' if n != 1 else ''} (cuda:0 to cuda:{n - 1})")
    # deterministic cuBLAS needs this before the first CUDA call (docs: "Reproducibility")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device(name if index else "cuda")


def device_name(device: torch.device) -> str:
    """What the run log records: 'cpu', or 'cuda (NVIDIA H100 80GB HBM3)'."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    return f"cuda ({torch.cuda.get_device_name(device)})"
