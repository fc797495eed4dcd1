"""output pipeline: QC report and watermark id on jobs; MD5 and a hash index on assets

Revision ID: 0004_output_pipeline
Revises: 0003_eng_hosted
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0004_output_pipeline'
down_revision = '0003_eng_hosted'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('qc_report', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('watermark_id', sa.String(length=32), nullable=True))
        batch_op.create_unique_constraint('uq_jobs_watermark_id', ['watermark_id'])
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('md5', sa.String(length=32), nullable=True))
        batch_op.create_index('ix_assets_sha256', ['sha256'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.drop_index('ix_assets_sha256')
        batch_op.drop_column('md5')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('uq_jobs_watermark_id', type_='unique')
        batch_op.drop_column('watermark_id')
        batch_op.drop_column('qc_report')
