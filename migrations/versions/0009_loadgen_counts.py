"""loadgen_counts: request records each load-generating process made per step, to tell an incomplete run

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 16:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "loadgen_counts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loadgen_counts")),
        sa.UniqueConstraint(
            "run_id",
            "target",
            "step_index",
            "host",
            "pid",
            name=op.f("uq_loadgen_counts_run_id_target_step_index_host_pid"),
        ),
    )
    op.create_index(op.f("ix_loadgen_counts_run_id"), "loadgen_counts", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_loadgen_counts_run_id"), table_name="loadgen_counts")
    op.drop_table("loadgen_counts")
