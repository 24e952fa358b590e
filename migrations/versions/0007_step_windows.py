"""steps.window_opened_at and steps.load_reached: the measured window each step's figures use

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("window_opened_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("load_reached", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("steps", schema=None) as batch_op:
        batch_op.drop_column("load_reached")
        batch_op.drop_column("window_opened_at")
