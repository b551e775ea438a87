"""Versioned schema migrations (Alembic): `upgrade` brings a database to the newest revision.

The scripts live next to this module (`env.py`, `versions/`) and ship with the package, so every process
that opens a store can migrate its database; `Database.create_schema` calls `upgrade` at start-up.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).resolve().parent
# The schema of the last release before Alembic (816b7be): databases made by older code are stamped here.
BASELINE = "0001_baseline"

# Alembic installs `alembic.context` and `alembic.op` as process-wide proxies while it runs, so two threads
# of one process must not migrate at once, whatever the database's own lock does.
_running = threading.Lock()


# Columns that code before the baseline added with `ALTER TABLE ... ADD COLUMN` when it started (commits
# 99a50b1 and 010a17e); a database last opened by older code may lack them. Nothing is added here again:
# every later column comes with a migration in versions/. New Column objects on each call, because adding
# one attaches it to a table.
def _pre_baseline_columns() -> dict[str, list[sa.Column[Any]]]:
    return {
        "models": [
            sa.Column("trainable", sa.Boolean),
            sa.Column("validation_attempts", sa.Integer, nullable=False, server_default="0"),
        ],
    }


def alembic_config(connection: Connection | None = None) -> Config:
    """A Config built in code on this package's scripts; env.py migrates on `connection` when given."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


def current_revision(conn: Connection) -> str | None:
    """The revision the database on `conn` is at; None for an empty database or one older code made."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(conn: Connection) -> None:
    """Migrate the database on `conn` to head, inside the caller's transaction (idempotent).

    An empty database goes straight to head. One that older code made has the tables but no
    `alembic_version`: it gets the columns it may lack, is stamped at the baseline, then upgraded.
    The caller serializes processes (a PostgreSQL advisory lock, SQLite's write lock).
    """
    config = alembic_config(conn)
    with _running:
        current = current_revision(conn)
        known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
        if current is not None and current not in known:
            # A newer release migrated it: a rolling upgrade, and this process started from the older image.
            # Revisions that only add columns leave older code able to run (docs/operations.md, Upgrading),
            # so it starts rather than failing on a revision it cannot find.
            log.warning("database schema is at %s, newer than this code knows; leaving it as it is", current)
            return
        tables = set(sa.inspect(conn).get_table_names())
        if current is None and "jobs" in tables:
            _add_pre_baseline_columns(conn)
            command.stamp(config, BASELINE)
            log.info("stamped a database made before versioned migrations at %s", BASELINE)
        command.upgrade(config, "head")


def _add_pre_baseline_columns(conn: Connection) -> None:
    inspector = sa.inspect(conn)
    operations = Operations(MigrationContext.configure(conn))
    for table, columns in _pre_baseline_columns().items():
        present = {column["name"] for column in inspector.get_columns(table)}
        for column in columns:
            if column.name not in present:
                operations.add_column(table, column)
                log.info("added column %s.%s", table, column.name)
