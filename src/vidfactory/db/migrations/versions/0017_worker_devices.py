"""workers record how many devices they span (one job across several GPUs)

Revision ID: 0017_worker_devices
Revises: 0016_cache_canonical_key
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op


revision = '0017_worker_devices'
down_revision = '0016_cache_canonical_key'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('devices', sa.Integer(), server_default='1', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('devices')
