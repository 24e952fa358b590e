"""steps.lost_workers, lost_at and users_left: Locust workers lost during a step, and the load left

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 15:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lost_workers", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("lost_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("users_left", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("steps", schema=None) as batch_op:
        batch_op.drop_column("users_left")
        batch_op.drop_column("lost_at")
        batch_op.drop_column("lost_workers")
