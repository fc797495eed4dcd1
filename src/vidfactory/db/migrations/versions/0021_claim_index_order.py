"""the claim's indexes in the claim's own order (priority highest first, then age, then id; and age, then
id, for the aging tier), so each lookup reads the index in order and stops at the first job that fits

Revision ID: 0021_claim_index_order
Revises: 0020_review_deadline
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0021_claim_index_order'
down_revision = '0020_review_deadline'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_jobs_claim', table_name='jobs')
    op.drop_index('ix_jobs_queued_created', table_name='jobs')
    op.create_index('ix_jobs_claim', 'jobs', ['status', sa.text('priority DESC'), 'created_at', 'id'])
    op.create_index('ix_jobs_queued_created', 'jobs', ['status', 'created_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_jobs_queued_created', table_name='jobs')
    op.drop_index('ix_jobs_claim', table_name='jobs')
    op.create_index('ix_jobs_queued_created', 'jobs', ['status', 'created_at'])
    op.create_index('ix_jobs_claim', 'jobs', ['status', 'priority', 'created_at'])
