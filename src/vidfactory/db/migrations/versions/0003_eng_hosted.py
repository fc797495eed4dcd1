"""hosted engines: engine metadata on jobs; a circuit breaker per hosted model

Revision ID: 0003_eng_hosted
Revises: 0002_reviews_alerts
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0003_eng_hosted'
down_revision = '0002_reviews_alerts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('engine_metadata', sa.JSON(), nullable=True))
    op.create_table('engine_breakers',
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('probe_owner', sa.String(length=80), nullable=True),
    sa.Column('probe_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('closed', 'open', 'half_open')", name='breaker_state_known'),
    sa.CheckConstraint('failures >= 0', name='breaker_failures_nonneg'),
    sa.PrimaryKeyConstraint('model')
    )


def downgrade() -> None:
    op.drop_table('engine_breakers')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('engine_metadata')
