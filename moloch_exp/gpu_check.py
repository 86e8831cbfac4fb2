"""GPU check: a small cell's agent side on a CUDA device, through the project's own code path: anchors
and agent prompts from the task, K candidates per anchor from HFGenerator (batched, seeded sampling),
then LoRA SFT on them with LoraSFTTrainer (TRL) in bf16 with gradient checkpointing. Prints tokens/s
and the training step time (median over the steps after the first), and peak GPU memory. The weights
load in bf16 (``model.torch_dtype=auto``), LoRA weights stay float32 under bf16 autocast.

    bash scripts/gpu_check.sh                                      # the project's environment
    bash scripts/gpu_check.sh --wheelhouse /shared/wheelhouse      # a node without network (see the script)
    python -m moloch_exp.gpu_check model=smollm2 anchors.n_train=16 trainer.args.max_steps=10
    python -m moloch_exp.gpu_check model=qwen generator.max_new_tokens=256   # the paper's agent (weights cached)

Arguments are the app's config overrides (conf/). Without a CUDA device, or on one without bf16, it
stops at once with one line and exit code 3. Nothing is written outside ``--out`` (a temporary dir).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

NO_DEVICE = 3
CONF = Path(__file__).resolve().parents[1] / "conf"
DEFAULTS = ["model=smollm2", "model.torch_dtype=auto", "anchors.n_train=8", "collect.candidates_per_anchor=2", "generator.max_new_tokens=128",
            "generator.batch_size=16", "trainer.args.max_steps=8", "trainer.args.per_device_train_batch_size=4",
            "trainer.args.bf16=true", "trainer.args.gradient_checkpointing=true"]


def device_problem() -> str | None:
    """Why this check cannot run here, in one line; None when a bf16-capable CUDA device is present."""
    import torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return (f"no CUDA device: torch {torch.__version__} ({build}), CUDA_VISIBLE_DEVICES="
                f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}; run it on a GPU node")
    if not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(0)} has no bf16 support (the check trains in bf16)"
    return None


def compose(overrides: list[str], out: Path):
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    import moloch_exp.resolvers  # noqa: F401

    cache = os.environ.get("MOLOCH_CACHE_DIR", str(Path.cwd() / ".cache" / "moloch_exp"))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("config", overrides=[*DEFAULTS, f"paths.cache_dir={cache}", f"paths.output_dir={out}",
                                                 *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg


def step_timer():
    """A transformers TrainerCallback timing every optimizer step (CUDA synchronised)."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self._t)

    return StepTimer()


def run_check(cfg, out: Path) -> dict:
    import torch

    from moloch_exp.pipeline import fit_anchors_to_context, make

    cache_dir = Path(cfg.paths.cache_dir)
    task, source, generator, trainer = make(cfg.task), make(cfg.model), make(cfg.generator), make(cfg.trainer)
    source.check_available()
    source.materialize(cache_dir)
    # the cell's own prompt budget: anchors too long for the context are rejected or truncated as in a run
    fit_anchors_to_context(cfg, task, source, generator, trainer, cache_dir)
    anchors, _ = task.load_anchors("train", cfg.anchors.n_train)
    k = cfg.collect.candidates_per_anchor
    prompts = [task.agent_messages(a) for a in anchors for _ in range(k)]
    generator.load()
    generator.generate(prompts[:1], [0], desc="warm-up", max_new_tokens=8)  # kernels and allocator, not measured
    torch.cuda.reset_peak_memory_stats()
    completions = generator.generate(prompts, list(range(len(prompts))), desc="gpu_check: candidates")
    gen = dict(generator.last_stats)
    gen_peak = torch.cuda.max_memory_allocated() / 2**30
    generator.close()
    examples = [{"prompt": p, "completion": [{"role": "assistant", "content": c or "."}], "kind": "rft",
                 "anchor_id": f"a{i}"} for i, (p, c) in enumerate(zip(prompts, completions))]
    torch.cuda.reset_peak_memory_stats()
    timer = step_timer()
    sft = trainer.build_trainer(source, str(cache_dir), examples, str(out / "adapter"))
    sft.add_callback(timer)
    frozen = next(p for p in sft.model.parameters() if not p.requires_grad).dtype
    resolved = trainer.resolved()
    sft.train()
    steps = timer.seconds[1:] or timer.seconds
    return {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
        "model": source.name, "anchors": len(anchors), "candidates": len(prompts),
        "generation": {**gen, "peak_gib": round(gen_peak, 2)},
        "training": {"bf16": resolved["bf16"], "gradient_checkpointing": resolved["gradient_checkpointing"],
                     "param_dtype": str(frozen),
                     "steps": len(timer.seconds), "micro_batch": resolved["per_device_micro_batch"],
                     "step_s_median": round(statistics.median(steps), 4), "first_step_s": round(timer.seconds[0], 4),
                     "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moloch_exp.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="working directory (default: a temporary one, removed at the end)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model=qwen anchors.n_train=16")
    args = parser.parse_args(argv)
    problem = device_problem()
    if problem:
        print(f"gpu_check: {problem}", file=sys.stderr)
        return NO_DEVICE
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        out = Path(args.out or tmp)
        report = run_check(compose(args.overrides, out), out)
    g, t = report["generation"], report["training"]
    print(f"gpu_check: {report['device']} (torch {report['torch']}, CUDA {report['cuda']}), model {report['model']}")
    print(f"  generation: {g['tokens_per_s']} tokens/s ({g.get('new_tokens')} new tokens, {report['candidates']} "
          f"candidates of {report['anchors']} anchors, {g.get('seconds')} s), peak {g['peak_gib']} GiB")
    print(f"  LoRA training: {t['step_s_median']} s/step (median of {t['steps']} steps, first {t['first_step_s']} s), "
          f"bf16={t['bf16']} gradient_checkpointing={t['gradient_checkpointing']} frozen weights {t['param_dtype']}, "
          f"micro-batch {t['micro_batch']}, peak {t['peak_gib']} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
