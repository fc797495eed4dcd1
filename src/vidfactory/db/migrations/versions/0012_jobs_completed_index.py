"""index jobs by completion time: the workers' failure-rate check reads the last window every few
seconds, which must not scan every job ever run

Revision ID: 0012_jobs_completed_index
Revises: 0011_tenant_brand
Create Date: 2026-12-02
"""

from alembic import op


revision = '0012_jobs_completed_index'
down_revision = '0011_tenant_brand'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_completed', ['completed_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_completed')
