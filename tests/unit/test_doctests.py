"""Every runnable example in the package's docstrings runs and prints what it says.

The examples are the first code a reader tries; one that drifted from the code is worse
than none. Modules are found by walking the package, so a new module is covered at once.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import service

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(service.__path__, "service.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (above)"
