"""API keys remember when they were last used (to the minute); voucher codes an operator issues and a
tenant redeems once for a voucher grant

Revision ID: 0029_keys_used_and_voucher_codes
Revises: 0028_alert_acknowledgement
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0029_keys_used_and_voucher_codes'
down_revision = '0028_alert_acknowledgement'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'voucher_codes',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('code_sha256', sa.String(length=64), nullable=False),
        sa.Column('prefix', sa.String(length=16), nullable=False),
        sa.Column('tokens', sa.BigInteger(), nullable=False),
        sa.Column('expires_days', sa.Integer(), nullable=False),
        sa.Column('memo', sa.String(length=200), nullable=False),
        sa.Column('redeem_by', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('redeemed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('tenant_id', sa.String(length=40), nullable=True),
        sa.Column('transfer_id', sa.String(length=40), nullable=True),
        sa.CheckConstraint('tokens > 0', name='voucher_code_tokens_positive'),
        sa.CheckConstraint('(redeemed_at IS NULL) = (tenant_id IS NULL)', name='voucher_code_redeemed_by_one'),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('code_sha256'),
    )
    op.create_index('ix_voucher_codes_tenant_id', 'voucher_codes', ['tenant_id'])


def downgrade() -> None:
    op.drop_index('ix_voucher_codes_tenant_id', table_name='voucher_codes')
    op.drop_table('voucher_codes')
    # In place, not a batch copy: SQLite (3.35+) drops the column without recreating a table other tables
    # reference (the copy's DROP TABLE would break their foreign keys).
    op.execute('ALTER TABLE api_keys DROP COLUMN last_used_at')
