"""The tests' PostgreSQL server is real: it runs unprivileged, answers on
127.0.0.1 with password authentication, and refuses a wrong password."""

import os
import pwd

import pytest


def test_server_runs_unprivileged_on_loopback(postgres, pg_url):
    import psycopg

    owner = os.stat(postgres.root / "data").st_uid
    assert pwd.getpwuid(owner).pw_name == postgres.user and owner != 0
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT inet_server_addr()::text").fetchone()[0] == "127.0.0.1/32"
        assert conn.execute("SELECT current_user").fetchone()[0] == "runq"


def test_wrong_password_is_refused(postgres):
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres.url(password="wrong"))
