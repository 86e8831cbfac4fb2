"""experiment=paper renders the reference's prompts byte for byte (goldens of the reference pack).

scripts/render_prompts.py is run as a user would (a Hydra compose: no model, no server). Its judge
files hold the literal PROMPT_TEXT where the reference shows the judge the chat-templated agent
prompt; the goldens hold the Qwen3-8B rendering there, so each judge golden must equal the script's
file with PROMPT_TEXT replaced by the Qwen3-8B rendering of the script's own agent.json (rendered
with the pack's reference template, itself checked against golden/rendered).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compose_helper import REPO
from moloch_exp.prompts.renderers import ReferenceChatTemplate

TASKS = {"sales": ["sales_q1"], "elections": ["elections_q1", "elections_q2"], "social_media": ["sm_q1", "sm_q2"]}
QWEN, LLAMA = "Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct"


def _dump(messages) -> bytes:
    return (json.dumps(messages, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


@pytest.fixture(scope="module")
def pack(paper_dir) -> dict:
    return yaml.safe_load((paper_dir / "reference" / "prompts.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def golden(paper_dir) -> Path:
    return paper_dir / "reference" / "golden"


def _render_all(paper_dir: Path, jobs: list[tuple[Path, str, tuple[str, ...]]]) -> list[Path]:
    """scripts/render_prompts.py once per (out, task, extra overrides), the processes side by side (each is
    mostly Hydra's and torch's start-up)."""
    procs = [subprocess.Popen([sys.executable, "scripts/render_prompts.py", "experiment=paper", f"task={task}",
                               f"data_dir={paper_dir}", f"out={out}", *extra],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for out, task, extra in jobs]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
    return [out for out, _, _ in jobs]


@pytest.fixture(scope="module")
def rendered(paper_dir, tmp_path_factory) -> dict:
    """Script output per (variant, task); stored_variant is experiment=paper's default."""
    base = tmp_path_factory.mktemp("render")
    jobs = {(variant, task): (base / f"{variant}_{task}", task, extra)
            for task in TASKS for variant, extra in (("stored_variant", ()), ("head_code", ("prompts.variant=head_code",)))}
    return dict(zip(jobs, _render_all(paper_dir, list(jobs.values()))))


@pytest.mark.parametrize("task", TASKS)
def test_agent_voter_tfb_are_byte_exact(rendered, golden, task):
    out = rendered[("stored_variant", task)]
    assert (out / "agent.json").read_bytes() == (golden / f"agent_{task}.stored_variant.json").read_bytes()
    assert (out / "voter.json").read_bytes() == (golden / f"voter_{task}.json").read_bytes()
    assert (out / "tfb.json").read_bytes() == (golden / f"tfb_{task}.json").read_bytes()
    head = rendered[("head_code", task)]
    assert (head / "agent.json").read_bytes() == (golden / f"agent_{task}.json").read_bytes()
    # The variants differ where the README's table says they do.
    assert (head / "agent.json").read_bytes() != (out / "agent.json").read_bytes()


@pytest.mark.parametrize("variant,suffix", [("stored_variant", ".stored_variant"), ("head_code", "")])
@pytest.mark.parametrize("task", TASKS)
def test_judges_are_byte_exact_with_the_qwen3_rendered_prompt(rendered, golden, pack, task, variant, suffix):
    out = rendered[(variant, task)]
    assert sorted(p.name for p in out.glob("judge_*.json")) == sorted(f"judge_{j}.json" for j in TASKS[task])
    agent = json.loads((out / "agent.json").read_text(encoding="utf-8"))
    qwen_prompt = ReferenceChatTemplate.from_pack(pack, QWEN).render(agent)
    for judge in TASKS[task]:
        script_bytes = (out / f"judge_{judge}.json").read_bytes()
        gold_bytes = (golden / f"judge_{judge}{suffix}.json").read_bytes()
        script = json.loads(script_bytes)
        uses_prompt = "PROMPT_TEXT" in script[1]["content"]
        assert uses_prompt == (judge != "elections_q2")  # the populism judge sees only the generation
        filled = [{**m, "content": m["content"].replace("PROMPT_TEXT", qwen_prompt)} for m in script]
        assert _dump(filled) == gold_bytes
        gold = json.loads(gold_bytes)
        back = [{**m, "content": m["content"].replace(qwen_prompt, "PROMPT_TEXT")} for m in gold]
        assert _dump(back) == script_bytes


@pytest.mark.parametrize("task", TASKS)
def test_reference_chat_templates_match_the_stored_renderings(rendered, golden, pack, task):
    stored = json.loads((golden / "rendered" / f"agent_{task}.json").read_text(encoding="utf-8"))
    tfb = json.loads((golden / "rendered" / f"tfb_{task}.json").read_text(encoding="utf-8"))
    for model in (QWEN, LLAMA):
        template = ReferenceChatTemplate.from_pack(pack, model)
        for variant in ("stored_variant", "head_code"):
            agent = json.loads((rendered[(variant, task)] / "agent.json").read_text(encoding="utf-8"))
            assert template.render(agent) == stored[variant][model]
        tfb_msgs = json.loads((rendered[("stored_variant", task)] / "tfb.json").read_text(encoding="utf-8"))
        assert template.render(tfb_msgs) == tfb[model]


def test_project_prompts_stay_the_default(tmp_path, paper_dir):
    res = subprocess.run([sys.executable, "scripts/render_prompts.py", "task=sales", f"out={tmp_path}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    agent = json.loads((tmp_path / "agent.json").read_text(encoding="utf-8"))
    assert "marketing expert" in agent[0]["content"]
    assert (tmp_path / "judge_misrepresentation.json").is_file()


def test_paper_prompts_without_data_dir_is_one_clear_error(tmp_path):
    res = subprocess.run([sys.executable, "scripts/render_prompts.py", "prompts=paper", "task=sales",
                          "data_dir=null", f"out={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "ConfigError" in res.stderr and "data_dir" in res.stderr and "Traceback" not in res.stderr
