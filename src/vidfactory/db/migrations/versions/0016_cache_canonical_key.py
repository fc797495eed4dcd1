"""result cache: similar hits by the key of the prompt's canonical form instead of MinHash LSH bands

Entries indexed before keep serving exact hits (their similar_key stays empty).

Revision ID: 0016_cache_canonical_key
Revises: 0015_jobs_aging_index
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0016_cache_canonical_key'
down_revision = '0015_jobs_aging_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table('cache_bands')
    with op.batch_alter_table('cache_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('similar_key', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_cache_entries_similar_key', ['similar_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cache_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_cache_entries_similar_key')
        batch_op.drop_column('similar_key')
    op.create_table('cache_bands',
    sa.Column('band_key', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['cache_entries.job_id'], ),
    sa.PrimaryKeyConstraint('band_key', 'job_id')
    )
