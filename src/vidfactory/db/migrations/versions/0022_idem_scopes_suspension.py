"""idempotency keys: a scope per key space (tenant, admin-credit, admin-voucher) in the primary key, and a
reservation while the first request runs; tenants: suspension

Revision ID: 0022_idem_scopes_suspension
Revises: 0021_claim_index_order
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0022_idem_scopes_suspension'
down_revision = '0021_claim_index_order'
branch_labels = None
depends_on = None

operator_scopes = ('admin-credit', 'admin-voucher')  # were prefixes of the key ("admin-credit:<key>")
keys = sa.table('idempotency_keys', sa.column('scope', sa.String), sa.column('key', sa.String))


def _primary_key(columns: list[str]) -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_constraint('idempotency_keys_pkey', 'idempotency_keys', type_='primary')
        op.create_primary_key('idempotency_keys_pkey', 'idempotency_keys', columns)
        return
    # Upgrading, the key columns as they will be: reflected with their old primary-key flags, SQLAlchemy
    # would warn that the table's primary key disagrees with its columns (on every first `make run`).
    # SQLAlchemy refuses the reverse redefinition, so the downgrade keeps its warning.
    key_columns = [sa.Column('tenant_id', sa.String(40), sa.ForeignKey('tenants.id'), nullable=False,
                             primary_key='tenant_id' in columns),
                   sa.Column('scope', sa.String(16), nullable=False, server_default='tenant',
                             primary_key='scope' in columns),
                   sa.Column('key', sa.String(255), nullable=False, primary_key='key' in columns)]
    reflected = key_columns if 'scope' in columns else []
    with op.batch_alter_table('idempotency_keys', recreate='always', reflect_args=reflected) as batch_op:
        batch_op.create_primary_key('idempotency_keys_pkey', columns)


def upgrade() -> None:
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scope', sa.String(length=16), nullable=False, server_default='tenant'))
        batch_op.add_column(sa.Column('reservation', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('reserved_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column('status_code', existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column('response', existing_type=sa.JSON(), nullable=True)
    for scope in operator_scopes:
        prefix = f'{scope}:'
        op.execute(keys.update().where(keys.c.key.startswith(prefix, autoescape=True))
                   .values(scope=scope, key=sa.func.substr(keys.c.key, len(prefix) + 1)))
    _primary_key(['tenant_id', 'scope', 'key'])
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('suspended_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('suspended_reason', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('suspended_reason')
        batch_op.drop_column('suspended_at')
    op.execute(sa.text("DELETE FROM idempotency_keys WHERE status_code IS NULL"))  # requests in flight
    for scope in operator_scopes:
        op.execute(keys.update().where(keys.c.scope == scope).values(key=sa.literal(f'{scope}:') + keys.c.key))
    _primary_key(['tenant_id', 'key'])
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.alter_column('response', existing_type=sa.JSON(), nullable=False)
        batch_op.alter_column('status_code', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('reserved_until')
        batch_op.drop_column('reservation')
        batch_op.drop_column('scope')
