"""per-tenant screening lexicon

Revision ID: 0005_safety_lexicon
Revises: 0004_output_pipeline
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0005_safety_lexicon'
down_revision = '0004_output_pipeline'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tenant_lexicon',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('term', sa.String(length=100), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("action IN ('block', 'review', 'allow')", name='lexicon_action_known'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'term')
    )


def downgrade() -> None:
    op.drop_table('tenant_lexicon')
