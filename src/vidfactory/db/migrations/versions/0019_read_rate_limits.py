"""reads (GET, HEAD, OPTIONS) get their own per-minute budget on each plan, per key and per tenant;
existing plans read ten times what they may write

Revision ID: 0019_read_rate_limits
Revises: 0018_served_models
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0019_read_rate_limits'
down_revision = '0018_served_models'
branch_labels = None
depends_on = None

reads_per_write = 10


def upgrade() -> None:
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('read_requests_per_minute', sa.Integer(), nullable=False,
                                      server_default='300'))
        batch_op.add_column(sa.Column('tenant_read_requests_per_minute', sa.Integer(), nullable=False,
                                      server_default='600'))
    plans = sa.table('plans', sa.column('requests_per_minute', sa.Integer),
                     sa.column('tenant_requests_per_minute', sa.Integer),
                     sa.column('read_requests_per_minute', sa.Integer),
                     sa.column('tenant_read_requests_per_minute', sa.Integer))
    op.execute(plans.update().values(
        read_requests_per_minute=plans.c.requests_per_minute * reads_per_write,
        tenant_read_requests_per_minute=plans.c.tenant_requests_per_minute * reads_per_write))


def downgrade() -> None:
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_column('tenant_read_requests_per_minute')
        batch_op.drop_column('read_requests_per_minute')
