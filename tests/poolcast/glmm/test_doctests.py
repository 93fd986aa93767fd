"""The docstring examples of the GLMM engine's public functions run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module", ["poolcast.glmm.terms", "poolcast.glmm.quadrature", "poolcast.glmm.ar1"]
)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
