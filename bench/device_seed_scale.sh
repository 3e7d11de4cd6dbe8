# Issue 15 on a lent GPU: the exact `run` calls (device tool), prepared and tested on CPU (tests/test_seed_scale.py,
# tests/test_bench_gpu.py). Not a shell script to execute here: the tool's arguments, to paste.
#
# 0. Here, once, in the checkout the session was started in (the pack is git-ignored, ~45 MiB):
#      PYTHONPATH=src .venv/bin/python bench/seed_scale.py pack      # frame regions, LPIPS float16, 6 wheels
#
# 1. The 256² experiment + the fast-loss benchmark — run(timeout_s=570, carry=[".seedpack"], command=):
CMD_SEED256='python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .seedpack/wheels/*.whl || exit 1; export PYTHONPATH=/tmp/site:$PWD/src FACESWAP_CACHE_DIR=/tmp/fscache PYTHONUNBUFFERED=1; set -o pipefail; (nvidia-smi -L; python3 bench/seed_scale.py install --pack .seedpack && python3 bench/gpu_train.py --steps 20 --warmup 5 --profile 5 --out $OUT && python3 bench/seed_scale.py run --pack .seedpack --out $OUT --rates $OUT/gpu_train.json --budget-s 220 --deadline-s 330) 2>&1 | tee $OUT/log.txt'
#    Comes back (8 files): gpu_train.json (+ kernel profile), log.txt, seed256_summary.md, seed256_<variant>.tar × 5.
#    Expected wall ≈ 8 min: pip 5 s, gpu_train ~90 s, per variant ~44 s training + ~30 s setup/evaluation.
#
# 2. The day-13 comparison, 512², 4 vs 5 encoder stages (next call or next lent session) — run(timeout_s=420,
#    carry=[".seedpack"], command=):
CMD_BOTTLENECK512='python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .seedpack/wheels/*.whl || exit 1; export PYTHONPATH=/tmp/site:$PWD/src FACESWAP_CACHE_DIR=/tmp/fscache PYTHONUNBUFFERED=1; set -o pipefail; python3 bench/seed_scale.py run --mode bottleneck512 --pack .seedpack --out $OUT --budget-s 200 --deadline-s 260 2>&1 | tee $OUT/log.txt'
#
# 3. Back here, with the files under the tool's files_at folder (copy them somewhere writable first):
#      PYTHONPATH=src .venv/bin/python bench/seed_scale.py identity --results DIR [--mode bottleneck512]
#    writes <mode>_summary_identity.md (the summary with identity transfer) and <tar>.identity.json per configuration.
#
# 4. Issue 13's GPU figures for the data stage (a separate call; RetinaFace at 640×480 and 1280×720). Here, first:
#      mkdir -p .datapack && cp -r ~/.cache/faceswap/retinaface .datapack/ && cp -r data/demo/raw .datapack/raw480
#      (the ONNX file, sha256-checked on load, and the demo clips; 1280×720 clips: run `faceswap demo-data` with
#      data.demo.width/height set to 1280/720 into .datapack/raw720). Then run(timeout_s=420,
#      carry=[".datapack", ".seedpack"], command=):
CMD_DATA_GPU='python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .seedpack/wheels/*.whl || exit 1; export PYTHONPATH=/tmp/site:$PWD/src FACESWAP_CACHE_DIR=$PWD/.datapack PYTHONUNBUFFERED=1; for r in raw480 raw720; do python3 bench/data.py --device cuda --no-mtcnn --runs 3 --raw .datapack/$r --out $OUT/$r || exit 1; done 2>&1 | tee $OUT/log.txt'
