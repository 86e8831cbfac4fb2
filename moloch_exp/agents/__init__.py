"""Agent models: where they come from (:mod:`.model_source`) and how they generate
(:mod:`.hf_generator`)."""

from .model_source import ModelSource, ModelUnavailableError

__all__ = ["ModelSource", "ModelUnavailableError", "HFGenerator"]


def __getattr__(name):  # lazy: importing the package must not import torch
    if name == "HFGenerator":
        from .hf_generator import HFGenerator

        return HFGenerator
    raise AttributeError(name)
