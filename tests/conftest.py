"""Tests import runq as users do (`runq.engine`, `runq.commands`), from this
working tree: the repository root is the `runq` package (see pyproject)."""

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

sys.path.insert(0, str(TESTS))


def _load_working_tree_package():
    spec = importlib.util.spec_from_file_location("runq", REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["runq"] = package
    spec.loader.exec_module(package)


_load_working_tree_package()
