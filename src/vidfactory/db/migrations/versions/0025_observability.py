"""job phase duration histograms and the last outcome of periodic checks, for /metrics; indexes that let
its scrape count jobs by state and model, and transfers by kind, from the index alone

Revision ID: 0025_observability
Revises: 0024_console_users
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0025_observability'
down_revision = '0024_console_users'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_phase_buckets',
        sa.Column('phase', sa.String(length=16), nullable=False),
        sa.Column('model', sa.String(length=64), nullable=False),
        sa.Column('le', sa.String(length=16), nullable=False),
        sa.Column('jobs', sa.BigInteger(), nullable=False),
        sa.Column('seconds', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('phase', 'model', 'le'),
    )
    op.create_table(
        'maintenance_runs',
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('ok', sa.Boolean(), nullable=False),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.Column('ran_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_index('ix_jobs_status_model', 'jobs', ['status', 'model', 'priority'])
    op.create_index('ix_transfers_kind', 'transfers', ['kind'])


def downgrade() -> None:
    op.drop_index('ix_transfers_kind', table_name='transfers')
    op.drop_index('ix_jobs_status_model', table_name='jobs')
    op.drop_table('maintenance_runs')
    op.drop_table('job_phase_buckets')
