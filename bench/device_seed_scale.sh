# Issue 15 on a machine with one CUDA GPU: the commands to run there, each from a copy of this checkout with the pack
# beside it, prepared and tested on CPU (tests/test_seed_scale.py, tests/test_bench_gpu.py). Not a script to execute
# as a whole: each CMD_* below is one command, with $OUT the folder its results go to.
#
# 0. Once, in this checkout on the CPU machine (the pack is git-ignored, ~45 MiB):
#      PYTHONPATH=src .venv/bin/python bench/seed_scale.py pack      # frame regions, LPIPS float16, 6 wheels
#
# 1. The 256² experiment + the fast-loss benchmark (≤ 570 s; needs .seedpack copied to the GPU machine):
CMD_SEED256='python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .seedpack/wheels/*.whl || exit 1; export PYTHONPATH=/tmp/site:$PWD/src FACESWAP_CACHE_DIR=/tmp/fscache PYTHONUNBUFFERED=1; set -o pipefail; (nvidia-smi -L; python3 bench/seed_scale.py install --pack .seedpack && python3 bench/gpu_train.py --steps 20 --warmup 5 --profile 5 --out $OUT && python3 bench/seed_scale.py run --pack .seedpack --out $OUT --rates $OUT/gpu_train.json --budget-s 220 --deadline-s 330) 2>&1 | tee $OUT/log.txt'
#    Comes back (8 files): gpu_train.json (+ kernel profile), log.txt, seed256_summary.md, seed256_<variant>.tar × 5.
#    Expected wall ≈ 8 min: pip 5 s, gpu_train ~90 s, per variant ~44 s training + ~30 s setup/evaluation.
#
# 2. The day-13 comparison, 512², 4 vs 5 encoder stages (a second command, ≤ 420 s; needs .seedpack):
CMD_BOTTLENECK512='python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .seedpack/wheels/*.whl || exit 1; export PYTHONPATH=/tmp/site:$PWD/src FACESWAP_CACHE_DIR=/tmp/fscache PYTHONUNBUFFERED=1; set -o pipefail; python3 bench/seed_scale.py run --mode bottleneck512 --pack .seedpack --out $OUT --budget-s 200 --deadline-s 260 2>&1 | tee $OUT/log.txt'
#
# 3. Back on the CPU machine, with the GPU machine's $OUT copied into a writable folder DIR:
#      PYTHONPATH=src .venv/bin/python bench/seed_scale.py identity --results DIR [--mode bottleneck512]
#    writes <mode>_summary_identity.md (the summary with identity transfer) and <tar>.identity.json per configuration.
#
# 4. Issue 13's GPU figures for the data stage (a third command; RetinaFace at 640×480 and 1280×720). First, here:
#      mkdir -p .datapack && cp -r ~/.cache/faceswap/retinaface .datapack/ && cp -r data/demo/raw .datapack/raw480
#      (the ONNX file, sha256-checked on load, and the demo clips; 1280×720 clips: run `faceswap demo-data` with
#      data.demo.width/height set to 1280/720 into .datapack/raw720). Then, with .datapack and .seedpack copied to
#      the GPU machine (≤ 420 s):
CMD_DATA_GPU='python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .seedpack/wheels/*.whl || exit 1; export PYTHONPATH=/tmp/site:$PWD/src FACESWAP_CACHE_DIR=$PWD/.datapack PYTHONUNBUFFERED=1; for r in raw480 raw720; do python3 bench/data.py --device cuda --no-mtcnn --runs 3 --raw .datapack/$r --out $OUT/$r || exit 1; done 2>&1 | tee $OUT/log.txt'
