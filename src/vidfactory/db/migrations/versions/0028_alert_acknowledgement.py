"""alert acknowledgement: when an operator acknowledged an alert, and who

Revision ID: 0028_alert_acknowledgement
Revises: 0027_retention
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0028_alert_acknowledgement'
down_revision = '0027_retention'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('acknowledged_by', sa.String(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_column('acknowledged_by')
        batch_op.drop_column('acknowledged_at')
