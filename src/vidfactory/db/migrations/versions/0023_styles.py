"""styles: a tenant's LoRA adapters; the styles a job is made with; a template's default style

Revision ID: 0023_styles
Revises: 0022_idem_scopes_suspension
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0023_styles'
down_revision = '0022_idem_scopes_suspension'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'styles',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('tenant_id', sa.String(length=40), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('base_model', sa.String(length=32), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('source', sa.String(length=8), nullable=False),
        sa.Column('default_scale', sa.Float(), nullable=False),
        sa.Column('description', sa.String(length=500), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('rank', sa.Integer(), nullable=True),
        sa.Column('size_bytes', sa.BigInteger(), nullable=True),
        sa.Column('storage_key', sa.String(length=300), nullable=True),
        sa.Column('training', sa.JSON(none_as_null=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('training', 'ready', 'failed')", name='style_status_known'),
        sa.CheckConstraint("source IN ('uploaded', 'trained')", name='style_source_known'),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('tenant_id', 'name'),
    )
    op.create_index('ix_styles_tenant_created', 'styles', ['tenant_id', 'created_at'])
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('styles', sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('style_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('style_scale', sa.Float(), nullable=True))
        batch_op.create_foreign_key('fk_templates_style_id', 'styles', ['style_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_constraint('fk_templates_style_id', type_='foreignkey')
        batch_op.drop_column('style_scale')
        batch_op.drop_column('style_id')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('styles')
    op.drop_index('ix_styles_tenant_created', table_name='styles')
    op.drop_table('styles')
