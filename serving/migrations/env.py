"""Alembic's entry point for the app store: runs the migrations on the connection that
`AppStore.upgrade` passes in (`config.attributes["connection"]`), under its migration lock."""

from __future__ import annotations

from alembic import context

from serving.app_store import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the app store's migrations with `minirec db upgrade` (AppStore.upgrade), "
                       "which passes the database connection in")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
