"""console users (a tenant's people and platform operators) and their sessions; events name their video
and are read in order per tenant and per video (the event streams)

Revision ID: 0024_console_users
Revises: 0023_styles
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0024_console_users'
down_revision = '0023_styles'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'users',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('tenant_id', sa.String(length=40), nullable=True),
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('password_hash', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('password_changed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('failed_signins', sa.Integer(), server_default='0', nullable=False),
        sa.Column('locked_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('owner', 'member', 'viewer', 'operator', 'reviewer')",
                           name='user_role_known'),
        sa.CheckConstraint("(role IN ('operator', 'reviewer')) = (tenant_id IS NULL)",
                           name='user_tenant_matches_role'),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('email'),
    )
    op.create_index('ix_users_tenant_id', 'users', ['tenant_id'])
    op.create_table(
        'console_sessions',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('user_id', sa.String(length=40), nullable=False),
        sa.Column('token_sha256', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_sha256'),
    )
    op.create_index('ix_console_sessions_user_id', 'console_sessions', ['user_id'])
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('job_id', sa.String(length=40), nullable=True))
        batch_op.create_index('ix_webhook_events_tenant_seq', ['tenant_id', 'seq'])
        batch_op.create_index('ix_webhook_events_job_seq', ['job_id', 'seq'])


def downgrade() -> None:
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_events_job_seq')
        batch_op.drop_index('ix_webhook_events_tenant_seq')
        batch_op.drop_column('job_id')
    op.drop_index('ix_console_sessions_user_id', table_name='console_sessions')
    op.drop_table('console_sessions')
    op.drop_index('ix_users_tenant_id', table_name='users')
    op.drop_table('users')
