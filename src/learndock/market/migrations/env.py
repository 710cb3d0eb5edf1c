"""Alembic environment: runs against the connection the Market hands over."""

from __future__ import annotations

from alembic import context

from learndock.market.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic` CLI usage with sqlalchemy.url in the config
    from sqlalchemy import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
