"""The app store: apps with key digests and settings, their audit, and the change counter.

Revision ID: 0001_apps
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0001_apps"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "minirec_apps",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("key_sha256", sa.String(64), nullable=False),
        sa.Column("previous_key_sha256", sa.String(64)),
        sa.Column("previous_key_until", sa.DateTime(timezone=True)),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "minirec_app_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("changes", sa.JSON, nullable=False),
    )
    op.create_index("ix_minirec_app_audit_app_id", "minirec_app_audit", ["app_id"])
    changes = op.create_table(
        "minirec_app_changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(changes, [{"id": 1, "version": 0, "changed_at": dt.datetime.now(dt.timezone.utc)}])


def downgrade() -> None:
    op.drop_table("minirec_app_changes")
    op.drop_index("ix_minirec_app_audit_app_id", "minirec_app_audit")
    op.drop_table("minirec_app_audit")
    op.drop_table("minirec_apps")
