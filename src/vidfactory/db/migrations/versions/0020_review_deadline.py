"""a review deadline per plan (seconds, and approve or refund then); each held job keeps its own

Revision ID: 0020_review_deadline
Revises: 0019_read_rate_limits
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0020_review_deadline'
down_revision = '0019_read_rate_limits'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_deadline_s', sa.Integer(), nullable=False, server_default='3600'))
        batch_op.add_column(sa.Column('review_deadline_action', sa.String(length=8), nullable=False,
                                      server_default='refund'))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_due_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('review_on_due', sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('review_on_due')
        batch_op.drop_column('review_due_at')
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_column('review_deadline_action')
        batch_op.drop_column('review_deadline_s')
