"""a tenant's optional brand mark, burned into every delivered clip

Revision ID: 0011_tenant_brand
Revises: 0010_template_pre_generate
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0011_tenant_brand'
down_revision = '0010_template_pre_generate'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('brand', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('brand')
