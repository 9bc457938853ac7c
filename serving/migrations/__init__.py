"""Alembic migrations of the app store (serving/app_store.py), shipped in the package and applied
at server start and by `minirec db upgrade` (never by hand with an alembic.ini)."""
