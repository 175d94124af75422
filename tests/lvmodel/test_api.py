"""lvmodel's public API: the top-level names, cheap to import, and the README's example runs."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import lvmodel

README = Path(__file__).resolve().parents[2] / "packages" / "lvmodel" / "README.md"


def test_import_lvmodel_does_not_import_torch():
    code = "import sys, lvmodel; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_every_public_name_resolves_and_is_documented():
    assert {"load_base", "apply_lora", "fit", "forecast", "evaluate_llm"} <= set(lvmodel.__all__)
    for name in lvmodel.__all__:
        obj = getattr(lvmodel, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__module__.startswith("lvmodel."), name
            assert inspect.getdoc(obj), f"lvmodel.{name} has no docstring"
    assert "no_such_name" not in dir(lvmodel)
    try:
        lvmodel.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("unknown names must raise AttributeError")


def test_the_readme_example_runs(random_tiny_dir, capsys):
    """The package README's first code block, as written, with the random tiny base in place of
    the pretrained `tiny` one (built once per machine, minutes)."""
    block = re.search(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert block is not None
    code = block.group(1)
    assert 'load_base("tiny")' in code
    exec(code.replace('load_base("tiny")', f"load_base({str(random_tiny_dir)!r})"), {})
    printed = capsys.readouterr().out
    assert "'mse':" in printed and "'invalid_rate': 0.0" in printed


def test_all_lists_exactly_the_lazy_names():
    assert sorted(lvmodel.__all__) == sorted(lvmodel._API)
