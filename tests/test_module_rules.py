"""The project's rules for modules of moloch_exp (issue 21 item 1), read with ``ast`` from every file:

- no module over 400 lines (one concern per file);
- no module imports a private name (``_x``) from another module;
- no module uses a private member of another module: an attribute ``obj._x`` (``self._x`` included)
  where ``_x`` is not defined in the module itself (by a def, a class, an assignment or a parameter).
  A private member shared between modules is a public one: name it so (e.g. ``EMJudgedProbe.judge_items``,
  which the EM probes and the judge controls call).

    PYTHONPATH=$PWD python -m pytest tests/test_module_rules.py -q
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "moloch_exp"
MAX_LINES = 400


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def defined_names(tree: ast.AST) -> set[str]:
    """Every name a module defines: functions, classes, assigned names and attributes, parameters."""
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
            out.add(n.attr)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.add(n.id)
        elif isinstance(n, ast.arg):
            out.add(n.arg)
    return out


def private_uses(source: str) -> list[str]:
    """``line: what`` for each private name imported from elsewhere or private member not defined here."""
    tree = ast.parse(source)
    here = defined_names(tree)
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            out += [f"{n.lineno}: from {'.' * n.level}{n.module or ''} import {a.name}"
                    for a in n.names if is_private(a.name)]
        elif isinstance(n, ast.Import):
            out += [f"{n.lineno}: import {a.name}" for a in n.names if any(map(is_private, a.name.split(".")))]
        elif isinstance(n, ast.Attribute) and is_private(n.attr) and n.attr not in here:
            out.append(f"{n.lineno}: {ast.unparse(n)}")
    return out


def modules() -> list[Path]:
    paths = sorted(PACKAGE.rglob("*.py"))
    assert len(paths) > 100
    return paths


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_no_module_uses_a_private_name_of_another():
    found = {str(p.relative_to(PACKAGE.parent)): uses for p in modules()
             if (uses := private_uses(p.read_text(encoding="utf-8")))}
    assert not found, f"private names used across modules (make them public or keep them in one module): {found}"


def test_the_private_name_check_can_fail():
    assert private_uses("from moloch_exp.training.trainer import _coerce\n") == [
        "1: from moloch_exp.training.trainer import _coerce"]
    assert private_uses("from .trainer import LoraSettings, _coerce\n") == ["1: from .trainer import _coerce"]
    assert private_uses("def f(task):\n    return task._fields(1)\n") == ["2: task._fields"]
    assert private_uses("class R(Base):\n    def to_json(self):\n        return self._tagged({})\n") == [
        "3: self._tagged"]
    # defined here (a method, an attribute set on self, a module-level helper), dunders: all fine
    assert private_uses("class A:\n    def _x(self):\n        self._y = 1\n        return self._x(), self._y\n"
                        "def _h(): pass\nz = A().__class__\n") == []
