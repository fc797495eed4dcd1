"""a template's reference image, stored: where its file is, its SHA-256, size and format

Revision ID: 0014_template_reference_image
Revises: 0013_job_reference_image
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0014_template_reference_image'
down_revision = '0013_job_reference_image'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reference_key', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('reference_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('reference_width', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reference_height', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reference_content_type', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_column('reference_content_type')
        batch_op.drop_column('reference_height')
        batch_op.drop_column('reference_width')
        batch_op.drop_column('reference_sha256')
        batch_op.drop_column('reference_key')
