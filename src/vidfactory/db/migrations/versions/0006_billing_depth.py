"""billing in depth: voucher accounts and transfer kinds, split holds, tenant price-book pins, hash-chained
audit log, result cache index, stored statements

Revision ID: 0006_billing_depth
Revises: 0005_safety_lexicon
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0006_billing_depth'
down_revision = '0005_safety_lexicon'
branch_labels = None
depends_on = None

seq_type = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
genesis_hash = '0' * 64


def upgrade() -> None:
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.create_check_constraint(
            'voucher_no_overdraft', "kind <> 'voucher' OR credits_posted - debits_posted - debits_pending >= 0")
    op.execute("INSERT INTO accounts (id, tenant_id, kind, debits_pending, debits_posted, credits_posted) "
               "SELECT 'voucher:' || id, NULL, 'voucher', 0, 0, 0 FROM tenants")
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.drop_constraint('kind_known', type_='check')
        batch_op.create_check_constraint(
            'kind_known', "kind IN ('credit', 'hold', 'post', 'void', 'grant', 'expire')")
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('price_book_version', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_tenants_price_book', 'price_books', ['price_book_version'], ['version'])
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('voucher_hold_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('cache_mode', sa.String(length=8), nullable=False, server_default='exact'))
        batch_op.add_column(sa.Column('cache_fingerprint', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('cache_shape_key', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('cache_hit_job_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('cache_hit_score', sa.Float(), nullable=True))
    op.create_table('audit_log',
    sa.Column('seq', seq_type, autoincrement=False, nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('actor', sa.String(length=80), nullable=False),
    sa.Column('subject', sa.String(length=80), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('hash')
    )
    head = op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(head, [{'id': 1, 'seq': 0, 'hash': genesis_hash}])
    op.create_table('cache_entries',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('shape_key', sa.String(length=64), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('cache_entries', schema=None) as batch_op:
        batch_op.create_index('ix_cache_entries_fingerprint', ['fingerprint'], unique=False)
    op.create_table('cache_bands',
    sa.Column('band_key', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['cache_entries.job_id'], ),
    sa.PrimaryKeyConstraint('band_key', 'job_id')
    )
    op.create_table('statements',
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('body_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('tenant_id', 'month')
    )


def downgrade() -> None:
    op.drop_table('statements')
    op.drop_table('cache_bands')
    with op.batch_alter_table('cache_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_cache_entries_fingerprint')
    op.drop_table('cache_entries')
    op.drop_table('audit_head')
    op.drop_table('audit_log')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('cache_hit_score')
        batch_op.drop_column('cache_hit_job_id')
        batch_op.drop_column('cache_shape_key')
        batch_op.drop_column('cache_fingerprint')
        batch_op.drop_column('cache_mode')
        batch_op.drop_column('voucher_hold_id')
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_constraint('fk_tenants_price_book', type_='foreignkey')
        batch_op.drop_column('price_book_version')
    op.execute("DELETE FROM accounts WHERE kind = 'voucher'")
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.drop_constraint('kind_known', type_='check')
        batch_op.create_check_constraint('kind_known', "kind IN ('credit', 'hold', 'post', 'void')")
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_constraint('voucher_no_overdraft', type_='check')
