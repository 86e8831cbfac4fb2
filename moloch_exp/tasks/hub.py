"""Rebuild task anchors from the public datasets with the paper's filters (needs hub access).

    python scripts/prepare_hub_data.py --out data/hub   # then task.source=paper data_dir=data/hub

Filters (El & Zou 2025): Amazon-Reviews-2023 ``raw_meta_Electronics`` (first 25 000 items,
descriptions 500–750 characters), CNN/DailyMail 3.0.0 train articles of 100–200 words, candidate
biographies of 85–350 words. Splits: shuffle with the seed, first half train, second half test.
"""
from __future__ import annotations

import os
import random

from moloch_exp.errors import DataError

HUB_DATASETS = {
    "sales": ("McAuley-Lab/Amazon-Reviews-2023", "raw_meta_Electronics"),
    "social_media": ("abisee/cnn_dailymail", "3.0.0"),
    "elections": (None, None),  # CampaignView biographies are not on the hub
}


def _offline() -> bool:
    return any(os.environ.get(v, "0") not in ("0", "", "false") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hub_split(task: str, split: str, n_per_split: int = 1024, seed: int = 0, scan_limit: int = 25000) -> list[dict]:
    name, config = HUB_DATASETS.get(task, (None, None))
    if name is None:
        raise DataError(f"task '{task}' has no public hub dataset; use task.source=paper with the paper's split files")
    if _offline():
        raise DataError(f"task.source=hub needs the Hugging Face hub ({name}) but HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set; "
                        "use task.source=bundled or task.source=paper data_dir=...")
    import datasets

    try:
        if task == "sales":
            ds = datasets.load_dataset(name, config, split="full", trust_remote_code=True, streaming=True)
            rows = []
            for i, item in enumerate(ds):
                if i >= scan_limit:
                    break
                desc = " ".join(item.get("description") or [])
                if 500 <= len(desc) <= 750:
                    rows.append({"title": item["title"], "categories": item.get("categories") or [], "description": desc})
        else:
            ds = datasets.load_dataset(name, config, split="train", streaming=True)
            rows = []
            for item in ds:
                if 100 <= len(item["article"].split()) <= 200:
                    rows.append({"article": item["article"], "highlights": item["highlights"], "id": item["id"]})
                if len(rows) >= 2 * n_per_split * 3:
                    break
    except Exception as err:  # network errors come in many types; name the cause once
        raise DataError(f"task.source=hub could not load {name} ({type(err).__name__}: {err}); "
                        "use task.source=bundled or task.source=paper data_dir=...") from None
    random.Random(seed).shuffle(rows)
    half = min(n_per_split, len(rows) // 2)
    return rows[:half] if split == "train" else rows[half: 2 * half]
