"""templates marked pre-generate: their defaults are generated when saved, so the first request hits the
result cache

Revision ID: 0010_template_pre_generate
Revises: 0009_notify_limits
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0010_template_pre_generate'
down_revision = '0009_notify_limits'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pre_generate', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_column('pre_generate')
