"""Alembic's environment for the store's migrations.

`Database.create_schema` runs them on its own connection (passed in `config.attributes["connection"]`,
inside its transaction). From the `alembic` command line (`-c service/store/migrations/alembic.ini`) they
run on the database named by `-x url=...`, else by PARRY_DATABASE_URL (the service's own setting).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from service.settings import Settings
from service.store.schema import make_engine, metadata


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    # Inside a transaction the caller opened, this joins it: the lock the caller holds covers the upgrade.
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    return context.get_x_argument(as_dictionary=True).get("url") or Settings().resolved_database_url


given: Connection | None = context.config.attributes.get("connection")
if given is not None:
    _migrate(given)
elif context.is_offline_mode():
    # `alembic upgrade --sql`: print the SQL for a DBA instead of running it.
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _migrate(conn)
    finally:
        engine.dispose()
