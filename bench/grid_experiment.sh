#!/usr/bin/env bash
# The grid experiment of issue #22 as DVC experiments: each cell is one `dvc exp run` of profiles/grid-128.yaml
# plus the cell's overrides (the factorial's cells: every variant × both seeds; the controls: two variants, seed 0, to fit the CPU budget). Run from the
# repository root, in a clone of its own if the workspace is in use (each cell leaves its outputs there):
#   bench/grid_experiment.sh grid-pixel grid-lpips grid-positive grid-phase
# A stopped cell is resumed by running it again (training resumes from its checkpoints; unchanged stages, the
# data stages above all, are skipped or restored from DVC's run cache, so every cell trains on the same faces);
# to redo a finished cell, `dvc exp remove NAME` first (no --force: it would re-run the data stages too). `dvc exp show --only-changed` then lists the cells with their metrics.
set -euo pipefail
W=0.1         # the LPIPS cell: the seed's L1 + 0.1 × LPIPS (profiles/seed-256.yaml)
STRONG=1.0    # the positive control: LPIPS weighted 10× (the regime the peers warn about)
declare -A CELL=(
  [grid-pixel]=""
  [grid-lpips]="-S train.loss.lpips_weight=$W"
  [grid-positive]="-S train.loss.lpips_weight=$STRONG -S model.variants=[convtranspose,resize_nearest] -S train.seeds=[0]"
  [grid-phase]="-S train.loss.lpips_weight=$STRONG -S train.loss.lpips_shift=7 -S model.variants=[convtranspose,resize_nearest] -S train.seeds=[0]"
)
for name in "$@"; do
  [[ -v CELL[$name] ]] || { echo "unknown cell $name (known: ${!CELL[*]})" >&2; exit 2; }
  # shellcheck disable=SC2046,SC2086
  dvc exp run -n "$name" $(faceswap profile portraits) $(faceswap profile grid-128) ${CELL[$name]}
done
