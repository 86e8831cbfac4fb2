#!/usr/bin/env bash
# The paper's grid on one GPU node: {qwen, llama} x {rft, tfb} x {sales, elections, social_media}.
#   OPENAI_API_KEY=... DATA_DIR=../shared/data/molochs_bargain bash scripts/paper_grid.sh
# Cells run one after another; each uses every GPU of the node through accelerate (rank 0 writes).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${DATA_DIR:-../shared/data/molochs_bargain}
NGPU=${NGPU:-$(nvidia-smi -L | wc -l)}
for model in qwen llama; do
  for task in sales elections social_media; do
    for method in rft tfb; do
      accelerate launch --multi_gpu --num_processes "$NGPU" run.py experiment=paper \
        task=$task method=$method model=$model data_dir="$DATA_DIR" "hydra.run.dir=multirun/paper_grid/${model}_${task}_${method}"
    done
  done
done
.venv/bin/python scripts/summarize_sweep.py multirun/paper_grid
