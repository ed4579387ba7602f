"""Your own model, end to end: `evolve --model hf:DIR` on tiny random GPT-2 and Llama models
(saved to a temporary directory, nothing downloaded), then resume, `eval`, `trace`, `show`,
`compare` and `report` read the model back from the run; training modes; bad directories and
devices are one-line errors."""

import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")

import hf_models as tiny  # noqa: E402

from neural.hf import fingerprint  # noqa: E402
from run_evolution import main  # noqa: E402

SEEDS = """(define plain (greedy logits))
(define lens (greedy (mix logits (layer 1) 0.8)))
(define blend (sample (temperature (layer-mix #(0.0 1.0)) 0.7)))
(define gate (greedy (gated #(2.0))))
"""
SETTINGS = ["task.difficulty=1", "task.size=200", "loop.pretrain_steps=0",
            "loop.train_steps=2", "loop.valid_prompts=6", "loop.test_prompts=6",
            "loop.bootstrap=50", "evolution.population_size=4", "evolution.tune_steps=2",
            "train.batch_size=8"]


def run_cli(capsys, *args, code=0):
    """`run_evolution.py ARGS` in this process: (stdout, stderr); asserts the exit code."""
    got = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert got == code, out + err
    assert "Traceback" not in err
    return out, err


def evolve(capsys, model_dir, out, seeds, *extra, generations=1, code=0):
    sets = [x for s in SETTINGS for x in ("--set", s)]
    task = [] if "--task" in extra else ["--task", "addition"]  # not the default's task
    return run_cli(capsys, "evolve", "--model", f"hf:{model_dir}", "--out", out, "--seeds",
                   seeds, "--generations", generations, *task, *sets, *extra, code=code)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    path = tmp_path_factory.mktemp("seeds") / "seeds.scm"
    path.write_text(SEEDS)
    return path


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def hf_run(request, tmp_path_factory, seeds):
    """(model directory, run directory) of a finished one-generation frozen run: GPT-2 on
    the built-in addition task, Llama on a `jsonl:` file."""
    base = tmp_path_factory.mktemp(request.param)
    model_dir = tiny.save(request.param, base / "model")
    task = []
    if request.param == "llama":
        data = base / "qa.jsonl"
        data.write_text("".join(json.dumps({"input": f"{a}+{b}=", "output": str(a + b)}) + "\n"
                                for a in range(10) for b in range(10)))
        task = ["--task", f"jsonl:{data}"]
    evolve(_Capture(), model_dir, base / "run", seeds, *task)
    return model_dir, base / "run"


class _Capture:
    """capsys for module fixtures: main() prints to sys.stdout, which pytest captures."""

    def readouterr(self):
        return "", ""


def test_run_records_the_model_and_its_fingerprint(hf_run):
    model_dir, run = hf_run
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["hf"]["path"] == str(model_dir)
    assert saved["hf"]["fingerprint"] == fingerprint(model_dir)
    assert saved["hf"]["train_mode"] == "frozen" and saved["tokenizer"]["kind"] == "hf"
    assert f'path = "{model_dir}"' in (run / "config.toml").read_text()
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [e["generation"] for e in log] == [0, 1]
    assert all(e["device"] == "cpu" and e["model"] is None for e in log)  # frozen: no training


def test_eval_trace_show_compare_report_read_the_model_back(hf_run, seeds, capsys):
    _, run = hf_run
    out, _ = run_cli(capsys, "eval", seeds, "--run", run, "--split", "test")
    scores = json.loads(out)["programs"]
    assert set(scores) == {"plain", "lens", "blend", "gate", "greedy"}
    assert scores["plain"] == scores["greedy"]  # the same program, the same draws
    out, _ = run_cli(capsys, "trace", seeds, "--def", "gate", "--run", run, "--prompt", "1+2=")
    assert out.startswith("trace of gate: (greedy (gated #(2.0 2.0") and "answer: " in out
    out, _ = run_cli(capsys, "show", run)
    assert "model: hf:" in out and "(frozen)" in out
    out, _ = run_cli(capsys, "compare", f"{seeds}:plain", f"{seeds}:lens", "--run", run)
    assert "A - B = " in out
    out, _ = run_cli(capsys, "report", run, "--device", "cpu")
    assert (run / "report.html").exists()


def test_text_task_is_tokenized_by_the_model(tmp_path, seeds, capsys):
    """A text task runs on the model: it trains (full) on windows of the running text in
    the model's own tokens, and its programs' continuations are scored."""
    import math

    from neural.hf import HFTokenizer
    from neural.tasks import get_task

    model_dir = tiny.save("gpt2", tmp_path / "model")
    text = tmp_path / "t.txt"
    text.write_text("".join(f"on day {i} the {['red', 'old', 'tall'][i % 3]} ship sailed to "
                            f"the {['north', 'east'][i % 2]} harbour\n" for i in range(1500)))
    evolve(capsys, model_dir, tmp_path / "run", seeds, "--task", f"text:{text}",
           "--set", "task.prompt_bytes=12", "--set", "task.continuation_bytes=12",
           "--set", "hf.train_mode=full", "--set", "loop.pretrain_steps=2")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert {"champion", "greedy", "seed:blend"} <= set(report["programs"])
    assert all(math.isfinite(r["test"]["score"]) for r in report["programs"].values())
    tok = HFTokenizer.from_pretrained(str(model_dir))
    corpus = get_task(f"text:{text}").training_data(tok)
    assert len(corpus) == sum(len(tok.encode(w)) for w in get_task(f"text:{text}").works[
        "train"])
    rows = corpus.sample(4, 16, torch.Generator().manual_seed(0))
    assert rows.ids.shape == (4, 17) and bool((rows.ids[:, 0] == tok.bos_id).all())
    full, window = tok.encode(text.read_text()), rows.ids[0, 1:].tolist()  # a piece of it
    assert any(full[i:i + 16] == window for i in range(len(full) - 15))


def test_resume_extends_as_an_uninterrupted_run(tmp_path, seeds, capsys):
    """One generation then a resume to two writes what two generations in one go write."""
    model_dir = tiny.save("gpt2", tmp_path / "model")
    evolve(capsys, model_dir, tmp_path / "a", seeds, generations=2)
    evolve(capsys, model_dir, tmp_path / "b", seeds, generations=1)
    run_cli(capsys, "evolve", "--resume", tmp_path / "b", "--generations", 2)

    def lines(run):
        return [{k: v for k, v in json.loads(x).items() if k != "timings"}
                for x in (run / "log.jsonl").read_text().splitlines()]

    assert lines(tmp_path / "a") == lines(tmp_path / "b")
    assert ((tmp_path / "a" / "hall-of-fame.scm").read_text()
            == (tmp_path / "b" / "hall-of-fame.scm").read_text())


def test_changed_weights_are_refused(hf_run, tmp_path, seeds, capsys):
    """Weights changed since the run: resume and eval say so in one line, and the run
    directory is left as it was."""
    model_dir, run = hf_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)

    def files():  # the lock file records who last held the run: not the run's state
        return sorted(p.read_bytes() for p in copy.rglob("*") if p.is_file()
                      and p.name != ".lock")

    before = files()
    weights = model_dir / "model.safetensors"
    original = weights.read_bytes()
    try:
        from safetensors.torch import load_file, save_file

        tensors = load_file(weights)
        name = sorted(tensors)[0]
        tensors[name] = tensors[name] + 0.01
        save_file(tensors, weights, metadata={"format": "pt"})
        _, err = run_cli(capsys, "evolve", "--resume", copy, "--generations", 2, code=1)
        assert err.count("\n") == 1 and "the model's weights changed since this run was " \
                                         "made" in err
        _, err = run_cli(capsys, "eval", seeds, "--run", copy, code=1)
        assert "weights changed" in err
    finally:
        weights.write_bytes(original)
    assert files() == before


def test_bad_model_directories_are_one_line_errors(tmp_path, capsys):
    _, err = run_cli(capsys, "evolve", "--model", f"hf:{tmp_path / 'none'}", "--out",
                     tmp_path / "r", code=1)
    assert err == f"error: hf:{tmp_path / 'none'}: no such directory (a local model directory " \
                  "with config.json, safetensors weights and tokenizer files)\n"
    model_dir = tiny.save("gpt2", tmp_path / "m")
    for f in model_dir.glob("tokenizer*"):
        f.unlink()
    _, err = run_cli(capsys, "evolve", "--model", f"hf:{model_dir}", "--out", tmp_path / "r",
                     code=1)
    assert err.startswith(f"error: hf:{model_dir}: cannot load the tokenizer") \
        and err.count("\n") == 1
    with pytest.raises(SystemExit) as usage:  # argparse's usage error
        main(["evolve", "--model", "hub-name"])
    assert usage.value.code == 2 and "expected gpt or hf:DIR" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("change, message", [
    ({"n_layer": 3}, "config.json has 12 tensors the weights lack (first: "
                     "transformer.h.2.attn.c_attn.bias)"),
    ({"n_layer": 1}, "config.json has no place for (first: transformer.h.1."),
    ({"n_positions": 4}, "1 tensor of the weights has another shape than config.json gives "
                         "(first: transformer.wpe.weight)"),
    ({"model_type": "nosuch"}, "cannot read config.json (ValueError: The checkpoint you are "
                               "trying to load has model type `nosuch`"),
])
def test_a_config_that_does_not_fit_its_weights_is_one_line(tmp_path, change, message):
    """transformers reports such a directory in a table of keys on stderr, and loaded one
    with more weights than its config.json places (the rest silently dropped); both are one
    line now, before a run directory exists. (A subprocess: transformers' log handler holds
    the stderr it found at import, which capsys does not see.)"""
    from conftest import cli

    model_dir = tiny.save("gpt2", tmp_path / "m")
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(config | change))
    err = cli("evolve", "--model", f"hf:{model_dir}", "--out", tmp_path / "r", check=1).stderr
    assert err.startswith(f"error: hf:{model_dir}: ") and message in err, err
    assert err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    _, err = run_cli(capsys, "evolve", "--device", "cuda", "--out", tmp_path / "r", code=1)
    assert err.startswith("error: device 'cuda': CUDA is not available on this machine") \
        and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    _, err = run_cli(capsys, "evolve", "--device", "tpu", "--out", tmp_path / "r", code=1)
    assert "run.device: device 'tpu': expected cpu, cuda, cuda:N or auto" in err


def test_resume_on_another_device_says_so(hf_run, tmp_path, capsys):
    """A run whose last generation ran elsewhere resumes here, with a note."""
    _, run = hf_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    log = copy / "log.jsonl"
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    entries[-1]["device"] = "cuda (NVIDIA H100)"
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    state = copy / "checkpoint" / "latest.json"
    _, err = run_cli(capsys, "evolve", "--resume", copy, "--generations", 1)
    assert "note: generations up to 1 ran on cuda (NVIDIA H100); they continue on cpu" in err
    assert state.exists()


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_training_modes(mode, tmp_path, seeds, capsys):
    """full trains every weight, lora only peft adapters (saved as safetensors that peft
    itself loads); both resume."""
    from safetensors.torch import load_file

    model_dir = tiny.save("llama", tmp_path / "model")
    run = tmp_path / "run"
    evolve(capsys, model_dir, run, seeds, "--set", f"hf.train_mode={mode}",
           "--set", "loop.pretrain_steps=2")
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert log[0]["model"]["step"] == 2 and log[1]["model"]["step"] == 4
    original = load_file(model_dir / "model.safetensors")
    if mode == "full":
        trained = load_file(run / "model" / "model.safetensors")
        assert set(trained) == set(original)
        assert any(not torch.equal(trained[k], original[k]) for k in original)
    else:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from neural.checkpoint import load_model
        from neural.hf import HFTokenizer

        adapters = load_file(run / "model" / "adapter_model.safetensors")
        assert adapters and all("lora_" in k for k in adapters)
        assert not (run / "model" / "model.safetensors").exists()
        base = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
        peft_model = PeftModel.from_pretrained(base, run / "model").eval()
        ours = load_model(str(run / "model"), tokenizer=HFTokenizer.from_pretrained(
            str(model_dir)))
        ids = torch.tensor([[1, 5, 6, 7, 8]])
        assert torch.allclose(peft_model(input_ids=ids).logits, ours.forward_step(ids).logits,
                              atol=1e-5)
        untouched = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
        assert not torch.allclose(untouched(input_ids=ids).logits,
                                  ours.forward_step(ids).logits, atol=1e-6)
    run_cli(capsys, "evolve", "--resume", run, "--generations", 2)


def test_a_model_without_a_lens_evolves_from_its_logits_only(tmp_path, capsys):
    """Granite scales its logits after the head, so `(layer k)` could not mean there what
    it means elsewhere: a seed that reads the layers is an error at its position naming the
    family, and a run from logit-only seeds never breeds a program that reads them."""
    model_dir = tiny.save("granite", tmp_path / "model")
    _, err = evolve(capsys, model_dir, tmp_path / "refused", seeds_file(tmp_path, SEEDS),
                    code=1)
    assert err.count("\n") == 1 and ":2:34: error: 'layer' cannot run on this model: the " \
        "model family 'granite' (GraniteForCausalLM): its logits are not its head" in err
    assert not (tmp_path / "refused").exists()
    plain = seeds_file(tmp_path, "(define plain (greedy logits))\n"
                                 "(define nucleus (sample (top-p logits 0.9)))\n")
    evolve(capsys, model_dir, tmp_path / "run", plain, "--set", "evolution.population_size=12",
           generations=2)
    bred = "".join(p.read_text() for p in (tmp_path / "run" / "generations").glob("*.scm"))
    assert bred.count("(define") >= 24  # 12 per generation file, 3 files
    assert "(layer" not in bred and "layer-mix" not in bred


def seeds_file(tmp_path, text):
    path = tmp_path / f"seeds-{len(list(tmp_path.glob('seeds-*')))}.scm"
    path.write_text(text)
    return path
