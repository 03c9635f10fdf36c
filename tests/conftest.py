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


# A PostgreSQL server for the whole session (tests/pgserver.py), started on
# first use; each test that asks for `pg_url` gets a new empty database.

import itertools  # noqa: E402

import pytest  # noqa: E402

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    import pgserver

    reason = pgserver.unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = pgserver.start(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres):
    return postgres.create_database(f"test{next(_database_numbers)}")
