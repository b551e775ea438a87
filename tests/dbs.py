"""Throw-away databases for tests: a fresh PostgreSQL database per use, so parallel runs never collide."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

# The server that tests may create databases on; PARRY_TEST_POSTGRES_URL overrides it.
ADMIN_URL = os.environ.get("PARRY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL answers at ADMIN_URL; tests skip with this message."""


@contextmanager
def fresh_postgres_url() -> Iterator[str]:
    """Create `parry_t_<hex>` on the test server, yield its URL, drop it afterwards."""
    admin_url = sa.make_url(ADMIN_URL)
    name = f"parry_t_{secrets.token_hex(6)}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except sa.exc.OperationalError as exc:
            raise PostgresUnavailable(
                f"PostgreSQL at {admin_url.render_as_string()} does not answer: {exc}"
            ) from exc
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
