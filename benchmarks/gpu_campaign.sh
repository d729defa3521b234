#!/usr/bin/env bash
# The GPU campaign: one command, one H100/H200, about 10 minutes. Results as JSON under OUT
# (default benchmarks/results/gpu-<gpu name>/), the GPU named in every file.
#
#   bash benchmarks/gpu_campaign.sh [--authors-src DIR] [--medmnist-root DIR] [--data adrenal]
#                                   [--out DIR] [--train-seconds 80] [--tiny]
#
# 1. Paper configuration of EquiLoPO (8 blocks, 4 channels, L 1 -> 2) against the MedMNIST3D
#    ResNet-18 in the same process: inference at batch 32, training step at batch 16, peak
#    memory, FLOPs, invariance error in the precision used — fp32, fp32 + torch.compile, bf16.
# 2. With --authors-src (the authors' repository, fetched into an ignored folder, never
#    committed): their ELPOResNet18 and ELPOResNet18Nano side by side with volrot's, same batch.
# 3. Training on AdrenalMNIST3D, each run stopped (Ctrl-C, resumable) after --train-seconds:
#    EquiLoPO (paper recipe), resnet3d, resnet3d --augment so3; then the Haar rotated
#    evaluation (64 rotations + the interpolation control) of each best checkpoint.
# 4. campaign.json: every figure of 1-3 in one file.
#
# --tiny runs the same steps on the CPU at a tiny size (used by tests/test_gpu_campaign.py),
# so that the script is known to work the moment a GPU is at hand.
set -euo pipefail
cd "$(dirname "$0")/.."

AUTHORS=""; ROOT="${VOLROT_MEDMNIST_ROOT:-}"; DATA="adrenal"; OUT=""; TRAIN_S=""; TINY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --authors-src) AUTHORS="$2"; shift 2 ;;
    --medmnist-root) ROOT="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --train-seconds) TRAIN_S="$2"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    *) echo "gpu_campaign.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
# the GPU run is time-boxed; --tiny checks that every step works, so it waits for its one epoch
TRAIN_S="${TRAIN_S:-$([ "$TINY" = 1 ] && echo 900 || echo 80)}"
if [ -z "$ROOT" ]; then
  for cand in shared/data/medmnist ../shared/data/medmnist; do
    [ -f "$cand/adrenalmnist3d.npz" ] && ROOT="$cand" && break
  done
fi

PY="${PYTHON:-python}"
if [ "$TINY" = 1 ]; then
  DEVICE=cpu
  BENCH=(--set blocks=1 --set channels=2 --batch 2 --train-batch 2 --size 8 --repeats 1 --warmup 0 --reference-width 4 --threads 1)
  TRAIN=(--set data.max_samples=16 --epochs 1 --batch-size 4)
  EQ_OPTS=(--set model.blocks=1 --set model.channels=2); RN_OPTS=(--set model.width=4)
  EVAL=(--n 2 --max-samples 8 --batch-size 8)
  VS=(--blocks 1 --batch 1 --size 8 --reps 1 --warmup 0 --rounds 1)
  export OMP_NUM_THREADS=1
else
  DEVICE=cuda
  BENCH=(--batch 32 --train-batch 16 --size 28 --repeats 20 --warmup 5)
  TRAIN=(--epochs 100)
  EQ_OPTS=(); RN_OPTS=()
  EVAL=(--n 64 --batch-size 64)
  VS=(--blocks 1 8 --batch 16 --size 28 --reps 10 --warmup 3 --rounds 2)
fi
GPU_NAME=$("$PY" -c "import torch,re; n=torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'; print(re.sub(r'[^a-z0-9]+','-',n.lower()).strip('-'))")
OUT="${OUT:-benchmarks/results/gpu-$GPU_NAME}"
mkdir -p "$OUT"
DATA_ARGS=(--data "$DATA")
[ -n "$ROOT" ] && [ "$DATA" != shapes ] && DATA_ARGS+=(--root "$ROOT")
[ "$TINY" = 1 ] && [ "$DATA" = shapes ] && TRAIN+=(--size 16)
echo "campaign: device $DEVICE ($GPU_NAME), out $OUT, data $DATA ${ROOT:+(root $ROOT)}"

# 1. paper configuration vs resnet3d
"$PY" benchmarks/bench.py equilopo --device "$DEVICE" "${BENCH[@]}" --out "$OUT/bench_equilopo_fp32.json" > /dev/null
if [ "$TINY" = 1 ]; then
  echo '{"skipped": "torch.compile is measured on the GPU only (--tiny)"}' > "$OUT/bench_equilopo_compiled.json"
else
  "$PY" benchmarks/bench.py equilopo --device "$DEVICE" "${BENCH[@]}" --compile --out "$OUT/bench_equilopo_compiled.json" > /dev/null \
    || echo '{"error": "torch.compile run failed"}' > "$OUT/bench_equilopo_compiled.json"
fi
"$PY" benchmarks/bench.py equilopo --device "$DEVICE" "${BENCH[@]}" --amp --out "$OUT/bench_equilopo_bf16.json" > /dev/null

# 2. the authors' code, when given
"$PY" benchmarks/bench_vs_authors.py --device "$DEVICE" ${AUTHORS:+--authors-src "$AUTHORS"} "${VS[@]}" \
  --out "$OUT/equilopo_vs_authors.json"

# 3. training (time-boxed: SIGINT stops a run after its current step, keeping best/last checkpoints)
train_and_eval() {
  local name="$1"; shift
  rm -rf "$OUT/runs/$name" "$OUT/eval/$name"
  timeout -s INT "$TRAIN_S" "$PY" -m volrot train "$@" "${DATA_ARGS[@]}" --device "$DEVICE" "${TRAIN[@]}" \
    --out "$OUT/runs" --name "$name" -q || true
  if [ -f "$OUT/runs/$name/best.safetensors" ]; then
    "$PY" -m volrot eval-rotated "$OUT/runs/$name/best.safetensors" "${DATA_ARGS[@]}" --protocol haar \
      --device "$DEVICE" "${EVAL[@]}" --out "$OUT/eval/$name" -q > /dev/null
  else
    echo "campaign: $name finished no epoch within ${TRAIN_S}s" >&2
  fi
}
train_and_eval equilopo --arch equilopo ${EQ_OPTS[@]+"${EQ_OPTS[@]}"}
train_and_eval resnet3d --arch resnet3d ${RN_OPTS[@]+"${RN_OPTS[@]}"}
train_and_eval resnet3d-so3 --arch resnet3d --augment so3 ${RN_OPTS[@]+"${RN_OPTS[@]}"}

# 4. one summary
"$PY" - "$OUT" "$TRAIN_S" <<'PY'
import json, sys
from pathlib import Path
out, train_s = Path(sys.argv[1]), float(sys.argv[2])
summary = {"schema": "volrot-gpu-campaign/1", "train_seconds_each": train_s, "bench": {}, "runs": {}}
for f in sorted(out.glob("bench_*.json")) + [out / "equilopo_vs_authors.json"]:
    summary["bench"][f.stem] = json.loads(f.read_text(encoding="utf-8"))
for run in sorted((out / "runs").glob("*")):
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if (run / "metrics.jsonl").exists() else []
    epochs = [json.loads(line) for line in lines if line.strip()]
    report = out / "eval" / run.name / "report.json"
    rotated = json.loads(report.read_text(encoding="utf-8")) if report.exists() else None
    summary["runs"][run.name] = {
        "epochs_done": len(epochs),
        "last_epoch": epochs[-1] if epochs else None,
        "rotated": {k: rotated[k] for k in ("reference", "protocols") if k in rotated} if rotated else None,
    }
(out / "campaign.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
print(f"campaign: wrote {out / 'campaign.json'}")
PY
