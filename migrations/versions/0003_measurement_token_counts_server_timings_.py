"""measurement: token counts, server timings, send delay, step rates, loadgen health

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 05:49:11.501202
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "loadgen_samples",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("sampled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cpu_pct", sa.Double(), nullable=False),
        sa.Column("loop_lag_ms", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loadgen_samples")),
    )
    with op.batch_alter_table("loadgen_samples", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_loadgen_samples_run_id_target_step_index"), ["run_id", "target", "step_index"], unique=False
        )

    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chunk_tokens", sa.JSON(), server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("client_output_tokens", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("server_timings_ms", sa.JSON(), server_default="{}", nullable=False))
        batch_op.add_column(sa.Column("send_delay_ms", sa.Double(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("response_ms", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("server_request_id", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("tokens_disagree", sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table("steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_rate_per_s", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("steps", schema=None) as batch_op:
        batch_op.drop_column("request_rate_per_s")

    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_column("tokens_disagree")
        batch_op.drop_column("server_request_id")
        batch_op.drop_column("response_ms")
        batch_op.drop_column("send_delay_ms")
        batch_op.drop_column("server_timings_ms")
        batch_op.drop_column("client_output_tokens")
        batch_op.drop_column("chunk_tokens")

    with op.batch_alter_table("loadgen_samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_loadgen_samples_run_id_target_step_index"))

    op.drop_table("loadgen_samples")
