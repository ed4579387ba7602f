"""Shared test setup: hypothesis profiles, the tests folder on sys.path (for strategies), and
the one tiny run that the run-reading tests share (`tiny_run`, made once per session)."""

import os
import subprocess
import sys
from pathlib import Path

# before torch loads, as the command line does: OpenMP threads wait passively, so tests on
# a busy machine slow down in proportion instead of stalling (issue 16, item 17)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# judges of text tasks are cached here, never in the user's cache (neural.text_measures)
if "ECHO_FORGE_CACHE" not in os.environ:  # made once (xdist's workers inherit it), removed at exit
    import atexit
    import shutil
    import tempfile

    os.environ["ECHO_FORGE_CACHE"] = tempfile.mkdtemp(prefix="echo-forge-test-cache-")
    atexit.register(shutil.rmtree, os.environ["ECHO_FORGE_CACHE"], ignore_errors=True)

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
TINY = str(ROOT / "tests" / "tiny.toml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny tensors: one intra-op thread avoids OpenMP spin-waits on a busy 2-core
    machine (subprocess runs get OMP_NUM_THREADS=1 for the same reason)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def cli(*args, check=None):
    """Run `run_evolution.py` as a user would; `check`: the exit code it must give."""
    proc = subprocess.run([sys.executable, str(ROOT / "run_evolution.py"), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=300)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(run directory, finished process) of one `evolve --config tests/tiny.toml`."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    proc = cli("evolve", "--out", out, "--config", TINY, check=0)
    return out, proc
