"""model runs index: a queued video's start estimate reads its model's newest completed runs off an index

Revision ID: 0030_model_runs_index
Revises: 0029_keys_used_and_voucher_codes
Create Date: 2026-12-06
"""

from alembic import op


revision = '0030_model_runs_index'
down_revision = '0029_keys_used_and_voucher_codes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_model_runs', 'jobs', ['status', 'model', 'completed_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_model_runs', table_name='jobs')
