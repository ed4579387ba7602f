#!/usr/bin/env bash
# What a session lent a GPU runs there, in one call (see docs/BENCHMARKS.md, "Your own model"):
# the two population benchmarks on the device, then every command on it end to end (the
# built-in GPT and a tiny random Llama through --model hf:DIR): evolve twice with one seed
# (the two runs must agree: reproducible per device), resume, eval, trace, and a resume of
# the GPU run on the CPU. Figures and logs go to $OUT (default: ./device-check).
#
#     bash bench/device_check.sh [cuda|cpu]      # cpu: the same checks here, smaller
set -uo pipefail
DEV=${1:-cuda}
OUT=${OUT:-device-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
W=$(mktemp -d)
small=()
[ "$DEV" = cpu ] && small=(--programs 4 --prompts 8 --repeats 1)
step() { echo "== $*"; "$@" || echo "FAILED ($?): $*"; }

step timeout 240 $PY bench/hf_population.py --device "$DEV" "${small[@]}" --json "$OUT/hf_population.json"
[ "$DEV" = cpu ] && small=(--programs 4 --prompts 16 --repeats 1)
step timeout 200 $PY bench/population.py --device "$DEV" "${small[@]}" --json "$OUT/population.json"

run=($PY run_evolution.py)
step "${run[@]}" evolve --config tests/tiny.toml --device "$DEV" --seed 1 --out "$W/a"
step "${run[@]}" evolve --config tests/tiny.toml --device "$DEV" --seed 1 --out "$W/b"
step $PY - "$W/a" "$W/b" <<'PY'
import hashlib, json, pathlib, sys
def digest(run):
    log = [json.loads(x) for x in (pathlib.Path(run) / "log.jsonl").read_text().splitlines()]
    for e in log:
        e.pop("timings", None)
    weights = sorted((pathlib.Path(run) / "model").glob("*.safetensors"))
    return json.dumps(log, sort_keys=True), [hashlib.sha256(w.read_bytes()).hexdigest() for w in weights]
a, b = (digest(r) for r in sys.argv[1:])
print("same seed, same device: log", "identical" if a[0] == b[0] else "DIFFERS",
      "| weights", "identical" if a[1] == b[1] else "DIFFER")
sys.exit(0 if a == b else 1)
PY
step "${run[@]}" evolve --resume "$W/a" --generations 3
step "${run[@]}" eval programs/nucleus.scm --run "$W/a" --device "$DEV"
step "${run[@]}" trace programs/nucleus.scm --run "$W/a" --prompt "12+34=" --device "$DEV"
step "${run[@]}" evolve --resume "$W/b" --generations 3 --device cpu
step $PY -c "import sys; sys.path.insert(0, 'tests'); import hf_models; hf_models.save('llama', '$W/llama')"
hf=(--model "hf:$W/llama" --task addition --set task.difficulty=1 --set loop.pretrain_steps=0)
step "${run[@]}" evolve --config tests/tiny.toml "${hf[@]}" --device "$DEV" --out "$W/h"
step "${run[@]}" evolve --resume "$W/h" --generations 3
step "${run[@]}" eval programs/nucleus.scm --run "$W/h" --device "$DEV"
step "${run[@]}" trace programs/nucleus.scm --run "$W/h" --prompt "1+2=" --device "$DEV"
rm -rf "$W"
