"""Prompt sets: ``project`` (the default) and ``paper`` (the reference code's, read from the pack).

    python run.py prompts=paper data_dir=../shared/data/molochs_bargain
    python scripts/render_prompts.py experiment=paper task=sales data_dir=../shared/data/molochs_bargain out=/tmp/p
"""
from moloch_exp.prompts.base import ChatRenderer, PromptSet
from moloch_exp.prompts.paper import PaperPrompts
from moloch_exp.prompts.project import ProjectPrompts
from moloch_exp.prompts.renderers import LiteralPrompt, ReferenceChatTemplate, TokenizerChatRenderer

__all__ = ["ChatRenderer", "PromptSet", "PaperPrompts", "ProjectPrompts", "LiteralPrompt", "ReferenceChatTemplate",
           "TokenizerChatRenderer"]
