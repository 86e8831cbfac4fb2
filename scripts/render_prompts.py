"""Write every prompt of a configuration for inspection, without loading a model or starting a server.

    python scripts/render_prompts.py experiment=paper task=sales data_dir=../shared/data/molochs_bargain out=/tmp/prompts
    python scripts/render_prompts.py task=elections out=/tmp/prompts          # the project's own prompts

Writes to ``out``, as JSON lists of {role, content} (indent 2, UTF-8), for test anchor 0 and
persona 0 of the audience's persona file: ``agent.json``, ``voter.json`` (options OPTION_ONE_TEXT
shown as A, OPTION_TWO_TEXT as B), ``tfb.json`` (the same two options) and ``judge_<name>.json``
per task probe (``<name>``: the reference judge under prompts=paper, e.g. sales_q1; the judged
message is MESSAGE_TEXT, and the judge's view of the templated agent prompt is the literal
PROMPT_TEXT, since no tokenizer is loaded). Any other argument is a Hydra override.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ["OPTION_ONE_TEXT", "OPTION_TWO_TEXT"]
MESSAGE = "MESSAGE_TEXT"
PROMPT = "PROMPT_TEXT"


def dump(path: Path, messages: list[dict]) -> None:
    path.write_text(json.dumps(messages, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def render(overrides: list[str], out: Path) -> list[Path]:
    import moloch_exp.resolvers  # noqa: F401
    from moloch_exp.protocols import is_model_probe
    from moloch_exp.prompts.renderers import LiteralPrompt

    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "paths.output_dir=."], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # ${hydra:runtime.cwd} in paths.cache_dir
    task = instantiate(cfg.task, _convert_="all")
    prompts = task.prompts
    if hasattr(prompts, "judge_prompt_renderer"):
        prompts.judge_prompt_renderer = LiteralPrompt(PROMPT)  # no tokenizer: the slot shows PROMPT_TEXT
    if hasattr(prompts, "check"):
        prompts.check(task)
    anchor = task.load_anchors("test", 1)[0][0]
    persona = instantiate(cfg.audience.personas, _convert_="all").load()[0]
    probes = {name: instantiate(p, _convert_="all") for name, p in (cfg.get("probes") or {}).items()}
    out.mkdir(parents=True, exist_ok=True)
    agent = task.agent_messages(anchor)
    files = {"agent.json": agent, "voter.json": prompts.voter_messages(task, persona, OPTIONS),
             "tfb.json": prompts.tfb_messages(task, anchor, OPTIONS)}
    for probe in probes.values():
        if is_model_probe(probe):
            continue
        files[f"judge_{prompts.judge_name(task, probe)}.json"] = prompts.judge_messages(
            task, probe, anchor, agent, MESSAGE, _judge_system(cfg))
    written = []
    for name, messages in files.items():
        dump(out / name, messages)
        written.append(out / name)
    return written


def _judge_system(cfg) -> str:
    from moloch_exp.probes.judge import Judge

    return cfg.judge.get("system") or Judge.system


def main(argv: list[str]) -> None:
    outs = [a for a in argv if a.startswith("out=")]
    if len(outs) != 1:
        sys.exit(__doc__)
    out = Path(outs[0].split("=", 1)[1])
    from moloch_exp.errors import UserError

    try:
        written = render([a for a in argv if not a.startswith("out=")], out)
    except UserError as err:
        sys.exit(f"error: {type(err).__name__}: {err}")
    for path in written:
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
