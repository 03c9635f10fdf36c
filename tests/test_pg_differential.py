"""runq selects in PostgreSQL what it selects in SQLite, and both what Guild
0.9.0 selects: the table cases of test_differential and the random cases of
test_random_differential, each run by the engine on a home's SQLite index
and on a copy of it in PostgreSQL (tests/pgloader.py)."""

import sqlite3

import pgloader
import pytest
from differential import NOW, disagreement, engine_select, guild_select_many, make_home
from strategies import Vocabulary
from test_differential import CASES
from test_random_differential import HOME_SEED, check_random_batches

from runq.engine.executor import register_functions
from runq.engine.samplehome import HomeSpec, generate_home

psycopg = pytest.importorskip("psycopg")


def _indexes(home, postgres, database):
    """{dialect: connection}: the home's SQLite index, and its copy in a new
    PostgreSQL database seen as one home."""
    sqlite_path = pgloader.decoded_sqlite_index(home)
    sqlite = sqlite3.connect(sqlite_path)
    register_functions(sqlite)
    pg = psycopg.connect(postgres.create_database(database), autocommit=True)
    pgloader.use_home(pg, pgloader.load(sqlite_path, pg))
    return {"sqlite": sqlite, "postgres": pg}


def _problems(indexes, case, command, args, guild):
    problems = []
    for dialect, conn in indexes.items():
        ids, error = engine_select(conn, command, args, dialect)
        problems.append(disagreement((dialect, case), guild, ids, error))
    return [p for p in problems if p]


# The table cases

@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return make_home(tmp_path_factory.mktemp("pg-differential") / "home")


@pytest.fixture(scope="module")
def guild_answers(home):
    return guild_select_many(home, [(command, guild_args) for command, _, guild_args in CASES])


@pytest.fixture(scope="module")
def indexes(home, postgres):
    connections = _indexes(home, postgres, "pg_differential")
    yield connections
    for conn in connections.values():
        conn.close()


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c[0]} {' '.join(c[1])}" for c in CASES])
def test_sqlite_and_postgres_select_as_guild(indexes, guild_answers, index):
    command, args, _ = CASES[index]
    problems = _problems(indexes, (command, args), command, args, guild_answers[index])
    assert not problems, "\n".join(problems)


# The random cases (as many as test_random_differential draws: RUNQ_HYPOTHESIS_EXAMPLES)

@pytest.fixture(scope="module")
def random_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("pg-random-differential") / "home"
    manifest = generate_home(root, HomeSpec(runs=120, seed=HOME_SEED, profile="fidelity"), NOW)
    return root, Vocabulary.of(manifest)


def test_random_selections_in_sqlite_and_postgres_match_guild(random_home, postgres):
    root, vocab = random_home
    indexes = _indexes(root, postgres, "pg_random_differential")
    try:
        check_random_batches(
            root, vocab, lambda case, answer: _problems(indexes, case, case.command, list(case.runq_args), answer)
        )
    finally:
        for conn in indexes.values():
            conn.close()
