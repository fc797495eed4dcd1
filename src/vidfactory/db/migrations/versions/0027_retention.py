"""retention: a period per plan (days); each ended job's expiry and its content's sweep state. Jobs that
ended before the upgrade expire at the upgrade time + their tenant's plan's retention, so the first sweep
after the upgrade deletes nothing

Revision ID: 0027_retention
Revises: 0026_training_jobs
Create Date: 2026-12-06
"""

from datetime import UTC, datetime, timedelta

from alembic import op
import sqlalchemy as sa

from vidfactory.db.types import UTCDateTime


revision = '0027_retention'
down_revision = '0026_training_jobs'
branch_labels = None
depends_on = None

retention_days_default = 30
seeded_retention_days = {'free': 7, 'pro': 30, 'enterprise': 90}  # as tenancy.default_plans seeds them

plans = sa.table('plans', sa.column('id', sa.String), sa.column('retention_days', sa.Integer))
tenants = sa.table('tenants', sa.column('id', sa.String), sa.column('plan_id', sa.String))
jobs = sa.table('jobs', sa.column('tenant_id', sa.String), sa.column('completed_at', UTCDateTime()),
                sa.column('expires_at', UTCDateTime()))


def upgrade() -> None:
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retention_days', sa.Integer(), nullable=False,
                                      server_default=str(retention_days_default)))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('content_status', sa.String(length=8), nullable=True))
        batch_op.create_index('ix_jobs_retention', ['content_status', 'expires_at'], unique=False)
    bind = op.get_bind()
    for plan_id, days in seeded_retention_days.items():
        bind.execute(plans.update().where(plans.c.id == plan_id).values(retention_days=days))
    upgraded_at = datetime.now(UTC)
    for plan_id, days in bind.execute(sa.select(plans.c.id, plans.c.retention_days)).all():
        bind.execute(jobs.update().where(
            jobs.c.completed_at.is_not(None),
            jobs.c.tenant_id.in_(sa.select(tenants.c.id).where(tenants.c.plan_id == plan_id)))
            .values(expires_at=upgraded_at + timedelta(days=days)))


def downgrade() -> None:
    # Dropped in place (SQLite 3.35+ drops columns natively): a batch would recreate the tables, which
    # SQLite refuses while rows of other tables point at them.
    op.drop_index('ix_jobs_retention', table_name='jobs')
    op.drop_column('jobs', 'content_status')
    op.drop_column('jobs', 'expires_at')
    op.drop_column('plans', 'retention_days')
