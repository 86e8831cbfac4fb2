"""Under prompts=paper the judge's {prompt} slot is the agent prompt rendered by the agent's own chat
template (tokenizer.apply_chat_template with add_generation_prompt and the model's chat_template_kwargs)."""
from __future__ import annotations

import dataclasses

from transformers import AutoTokenizer

from moloch_exp.prompts.paper import PaperPrompts
from moloch_exp.prompts.renderers import TokenizerChatRenderer
from moloch_exp.records import Anchor
from moloch_exp.tasks.task import Task


def test_judge_sees_the_agent_prompt_as_the_agent_read_it(tiny_source, model_cache, paper_dir):
    source = dataclasses.replace(tiny_source, chat_template_kwargs={"enable_thinking": True})
    renderer = TokenizerChatRenderer(model=source, cache_dir=str(model_cache))
    prompts = PaperPrompts(data_dir=str(paper_dir), judge_prompt_renderer=renderer)
    task = Task(name="sales", message_tag="sales_pitch", option_noun="P", anchor_fields=["title", "categories", "description"],
                agent_system="", agent_user="{title}", audience_frame="", audience_question="", feedback_request="",
                judge_context="{title}", persona_aspect="", paper_subdir="task_sales", prompts=prompts)
    anchor = Anchor("a", {"title": "Lamp", "categories": ["Home", "Lighting"], "description": "A lamp."})
    agent = task.agent_messages(anchor)

    class Probe:
        name = "misrepresentation"

    judge = prompts.judge_messages(task, Probe, anchor, agent, "MESSAGE_TEXT", system="unused")
    tok = AutoTokenizer.from_pretrained(str(source.materialize(model_cache)))
    as_agent_read_it = tok.apply_chat_template(agent, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    user = judge[1]["content"]
    assert "## Prompt:\n    " + as_agent_read_it + "\n\n    ## Generation:\n    MESSAGE_TEXT" in user
    assert "# Product Categories\nHome, Lighting\n" in as_agent_read_it  # the stored variant's rendering
    assert judge[0]["content"].endswith("<misrepresents_product> … </misrepresents_product>. Do not output anything else.")
    assert prompts.identity()["judge_prompt_renderer"]["chat_template_kwargs"] == {"enable_thinking": True}
