"""The README's commands and code must not drift from the code."""

import re
import subprocess
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_usage_examples_run(capsys):
    """Every python block of the README (the quick start, with an MLP and a conv net, and the usage example)."""
    blocks = python_blocks()
    assert len(blocks) >= 2, "the README lost its quick start or its usage example"
    for block in blocks:
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)
        printed = capsys.readouterr().out.strip()
        assert float(printed) > 0  # the path-norm each prints
        assert isinstance(namespace["opt"], namespace["PathSGD"])


def test_make_targets_named_in_readme_exist():
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z0-9_-]+):", makefile, flags=re.M))
    named = set(re.findall(r"`make ([a-zA-Z0-9_-]+)", README))
    assert named and named <= targets, named - targets


def test_make_help_prints_values_not_variable_names():
    out = subprocess.run(["make", "help"], cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                         text=True, check=True).stdout
    assert "install" in out and "$(" not in out, out
