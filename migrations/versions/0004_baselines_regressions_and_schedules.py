"""baselines, regressions and schedules

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 05:56:08.803070
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("sweep", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_schedules")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("accepted", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("baseline_run_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("regression", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("findings", sa.JSON(), server_default="[]", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("findings")
        batch_op.drop_column("regression")
        batch_op.drop_column("baseline_run_id")
        batch_op.drop_column("accepted")

    op.drop_table("schedules")
