"""Alembic environment: runs against the engine the service was configured with."""

from __future__ import annotations

from alembic import context

from vpp_aggregator.adapters.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
