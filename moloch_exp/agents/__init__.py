"""Agent models: where they come from (:mod:`.model_source`) and how they generate
(:mod:`.hf_generator`)."""

__all__ = ["ModelSource", "ModelUnavailableError", "HFGenerator"]


def __getattr__(name):  # lazy: importing the package imports neither torch nor a submodule that `python -m` runs
    if name in ("ModelSource", "ModelUnavailableError"):
        from . import model_source

        return getattr(model_source, name)
    if name == "HFGenerator":
        from .hf_generator import HFGenerator

        return HFGenerator
    raise AttributeError(name)
