"""when each configured model was first served: the models list's `created`

Revision ID: 0018_served_models
Revises: 0017_worker_devices
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0018_served_models'
down_revision = '0017_worker_devices'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('served_models',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('served_models')
