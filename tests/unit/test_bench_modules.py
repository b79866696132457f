"""`make bench` runs every bench module: each must at least import and have a main()."""

import importlib

import pytest

from bench.__main__ import modules


@pytest.mark.parametrize("name", modules([]))
def test_every_benchmark_module_imports_and_has_a_main(name):
    module = importlib.import_module(f"bench.{name}")
    assert callable(getattr(module, "main", None))
