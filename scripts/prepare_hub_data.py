"""Rebuild the task splits from the public datasets with the paper's filters (needs hub access).

    python scripts/prepare_hub_data.py --out data/hub [--n 1024] [--seed 0]
    python run.py task=sales task.source=paper data_dir=data/hub

Writes <out>/task_sales/{train,test}.json and <out>/task_sm/{train,test}.json in the layout of the
paper's files. Elections biographies (CampaignView) are not public on the hub.
"""
import argparse
import json
from pathlib import Path

from moloch_exp.tasks.hub import load_hub_split

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for task, sub in (("sales", "task_sales"), ("social_media", "task_sm")):
        for split in ("train", "test"):
            rows = load_hub_split(task, split, n_per_split=a.n, seed=a.seed)
            path = Path(a.out) / sub / f"{split}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rows, ensure_ascii=False))
            print(f"{path}: {len(rows)} records")
