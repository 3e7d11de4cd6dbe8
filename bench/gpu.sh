#!/usr/bin/env bash
# One command on a machine with one or more CUDA GPUs and this repository: results under OUT_DIR.
#
#   bash bench/gpu.sh [--dry-run] [--budget-s 480] [--pack DIR] [--variants "A B"] [--ddp-procs N] OUT_DIR
#
# Steps, each logged to OUT_DIR/<step>.log and listed in OUT_DIR/steps.tsv (status, seconds, command):
#   install     make setup: the pinned environment in .venv (needs the package registries)
#   tests       the tests that run the GPU code paths (bench scripts, compute plan, bf16 training)
#   throughput  bench/gpu_train.py at the seed profile: images/s and share of the bf16 matmul ceiling
#   pack        only without --pack/.seedpack: the demo's accepted faces (dvc repro validate) → .seedpack
#   seed256     bench/seed_scale.py run: a short 256² training + evaluation of two decoder variants
#   ddp         with several GPUs: faceswap train under torchrun, one process per GPU
#   summary     bench/gpu_summary.py: OUT_DIR/summary.md from everything above
# The script keeps a wall-time budget (default 480 s, from its start): a step that cannot finish in what is left
# is skipped, and the 256² run gets what the others leave.
#
# --dry-run runs the same logic on a CPU: every step's exact command is written to OUT_DIR/commands.sh, install is
# not run, the tests are only collected, and every Python step runs at a tiny size on the CPU (a 2-process gloo
# run for ddp), so a broken step fails here (tests/test_gpu_sh.py) before any GPU time is spent.
set -uo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

DRY=0 BUDGET=480 PACK="" VARIANTS="resize_nearest pixelshuffle" DDP_PROCS="" OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --budget-s) BUDGET="${2:?}"; shift ;;
    --pack) PACK="${2:?}"; shift ;;
    --variants) VARIANTS="${2:?}"; shift ;;
    --ddp-procs) DDP_PROCS="${2:?}"; shift ;;
    -h|--help) usage ;;
    -*) echo "gpu.sh: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || { echo "gpu.sh: one OUT_DIR only" >&2; usage; }; OUT="$1" ;;
  esac
  shift
done
[ -n "$OUT" ] || usage
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "gpu.sh: --budget-s must be whole seconds" >&2; exit 2; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
cd "$REPO" || exit 2
: > "$OUT/steps.tsv"
printf '# bench/gpu.sh%s: the commands of this run, in order (from %s)\n' "$([ $DRY = 1 ] && echo ' --dry-run')" \
  "$REPO" > "$OUT/commands.sh"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 NO_ALBUMENTATIONS_UPDATE=1
T0=$SECONDS
FAILED=0

left() { echo $((BUDGET - (SECONDS - T0))); }
log() { echo "[gpu.sh $((SECONDS - T0))s] $*" | tee -a "$OUT/log.txt" >&2; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$OUT/steps.tsv"; }

# step NAME MIN_S MAX_S CMD...: run CMD (logged) if MIN_S seconds are left (- : always), for at most MAX_S and what
# is left (at least 10 s)
step() {
  local name=$1 min=$2 max=$3; shift 3
  local cmd="$*" limit rc t
  echo "$cmd" >> "$OUT/commands.sh"
  if [ "$min" != - ] && [ "$(left)" -lt "$min" ]; then
    log "$name: skipped, $(left) s left of the budget (needs $min)"; record "$name" skipped 0 "$cmd"; return 0
  fi
  limit=$(( max < $(left) ? max : $(left) )); limit=$(( limit < 10 ? 10 : limit ))
  log "$name: $cmd (at most ${limit} s)"
  t=$SECONDS
  timeout --kill-after=15 "$limit" bash -c "$cmd" > "$OUT/$name.log" 2>&1
  rc=$?
  t=$((SECONDS - t))
  if [ $rc = 0 ]; then record "$name" ok "$t" "$cmd"; log "$name: ok in ${t} s"
  elif [ $rc = 124 ] || [ $rc = 137 ]; then record "$name" timeout "$t" "$cmd"; FAILED=1; log "$name: stopped at ${limit} s"
  else record "$name" "failed($rc)" "$t" "$cmd"; FAILED=1; log "$name: failed ($rc), tail of $OUT/$name.log:"
       tail -n 20 "$OUT/$name.log" | tee -a "$OUT/log.txt" >&2
  fi
  return $rc
}

# --- the machine ---------------------------------------------------------------------------------------------------
if [ $DRY = 1 ]; then
  GPUS=0 PY="${PYTHON:-python3}"
else
  GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
  [ "$GPUS" -ge 1 ] || { echo "gpu.sh: no CUDA GPU (nvidia-smi -L lists none); --dry-run checks the script on a CPU" >&2
                         exit 2; }
  PY="$REPO/.venv/bin/python"
fi
DDP_PROCS=${DDP_PROCS:-$([ $DRY = 1 ] && echo 2 || echo "$GPUS")}
{ echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"; echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "mode: $([ $DRY = 1 ] && echo dry-run || echo gpu)"; echo "budget_s: $BUDGET"
  echo "gpus: $GPUS"; nvidia-smi -L 2>/dev/null; nproc | sed 's/^/cpus: /'; } > "$OUT/env.txt"
log "OUT_DIR $OUT; $GPUS GPU(s); budget ${BUDGET} s$([ $DRY = 1 ] && echo '; dry run on the CPU')"

# --- install --------------------------------------------------------------------------------------------------------
if [ $DRY = 1 ]; then
  echo "make setup" >> "$OUT/commands.sh"; record install dry-run 0 "make setup"; log "install: make setup (not run)"
else
  step install 60 240 "make setup" || { log "install failed: nothing else can run"; exit 1; }
fi
"$PY" -c 'import torch; print("torch:", torch.__version__, "cuda:", torch.version.cuda)' >> "$OUT/env.txt" 2>&1

# --- sizes: the seed profile on a GPU, tiny on the CPU ---------------------------------------------------------------
GPU_TESTS="tests/test_bench_gpu.py tests/test_compute.py tests/test_compute_timing.py"
if [ $DRY = 1 ]; then
  TESTS="$PY -m pytest -q --collect-only $GPU_TESTS"
  THROUGHPUT="--steps 1 --warmup 1 --batch 2 --image-size 64 --width 8 --bottleneck 16 --variants resize_nearest \
--lpips none --workers 0 --faces 4"
  SEED_TINY="--image-size 64 --width 8 --bottleneck 16 --batch 2 --steps 1 --workers 0 --val-images 2 --eval-faces 3"
  DDP_SET="--image-size 64 --set model.width=8 model.bottleneck_channels=16 train.batch_size=2 train.steps=2 \
train.workers=0 train.val_images=2 train.val_every=2 train.checkpoint_every=2 train.preview_every=2 train.warmup_steps=1 \
train.device=cpu"
  TESTS_MAX=120 THROUGHPUT_MAX=120
else
  TESTS="$PY -m pytest -q -x $GPU_TESTS"
  THROUGHPUT="--steps 20 --warmup 5 --profile 5"
  SEED_TINY=""
  DDP_SET="--set train.steps=200 train.warmup_steps=20 train.val_every=200 train.checkpoint_every=200 train.preview_every=200"
  TESTS_MAX=90 THROUGHPUT_MAX=150
fi

step tests 20 "$TESTS_MAX" "$TESTS"
step throughput 30 "$THROUGHPUT_MAX" "$PY bench/gpu_train.py $THROUGHPUT --out $OUT"

# --- the faces: a pack of the demo's accepted faces ------------------------------------------------------------------
if [ -z "$PACK" ] && [ -f .seedpack/pack.json ]; then PACK=.seedpack; fi
if [ -z "$PACK" ]; then
  if [ $DRY = 1 ]; then
    echo "dvc repro validate && $PY bench/seed_scale.py pack --no-wheels --out .seedpack" >> "$OUT/commands.sh"
    record pack skipped 0 "no --pack in a dry run"; log "pack: skipped (a dry run needs --pack)"
  else
    step pack 120 240 "$REPO/.venv/bin/dvc repro validate && $PY bench/seed_scale.py pack --no-wheels --out .seedpack" \
      && PACK=.seedpack
  fi
fi

# --- a short 256² run of two variants, then DDP with several GPUs ----------------------------------------------------
DDP_RESERVE=0
[ "$DDP_PROCS" -ge 2 ] && DDP_RESERVE=$([ $DRY = 1 ] && echo 60 || echo 120)
if [ -n "$PACK" ]; then
  room=$(( $(left) - DDP_RESERVE - 15 ))
  train_s=$(( room * 45 / 100 ))  # the rest: setup, calibration and the evaluation of each variant
  rates=""; [ -f "$OUT/gpu_train.json" ] && [ $DRY = 0 ] && rates="--rates $OUT/gpu_train.json"
  step seed256 60 "$room" "$PY bench/seed_scale.py run --mode seed256 --pack $PACK --out $OUT/seed256 \
--variants $VARIANTS --budget-s $((train_s > 1 ? train_s : 1)) --deadline-s $((room * 60 / 100)) $rates $SEED_TINY"
  if [ "$DDP_PROCS" -ge 2 ]; then
    v=${VARIANTS%% *}
    step ddp 45 "$((DDP_RESERVE + 15))" "$PY bench/seed_scale.py prepare --mode seed256 --pack $PACK \
--out $OUT/ddp $DDP_SET && $PY -m torch.distributed.run --standalone --nproc_per_node $DDP_PROCS -m faceswap.cli train \
--variant $v --params $OUT/ddp/params.yaml"
  else
    record ddp skipped 0 "one GPU"; log "ddp: skipped (one GPU)"
  fi
else
  record seed256 skipped 0 "no pack"; record ddp skipped 0 "no pack"
fi

step summary - 60 "$PY bench/gpu_summary.py $OUT"
log "done in $((SECONDS - T0)) s of ${BUDGET} s: $OUT/summary.md"
exit $FAILED
