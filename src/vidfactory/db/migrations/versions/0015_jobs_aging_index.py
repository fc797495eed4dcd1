"""index queued jobs by age: the claim's aging tier takes the oldest job past the aging limit

Revision ID: 0015_jobs_aging_index
Revises: 0014_template_reference_image
Create Date: 2026-12-06
"""

from alembic import op


revision = '0015_jobs_aging_index'
down_revision = '0014_template_reference_image'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_queued_created', ['status', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_queued_created')
