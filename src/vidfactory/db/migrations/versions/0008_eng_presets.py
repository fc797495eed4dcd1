"""GPU workers registry; memory fit, memory mode, engine settings and model load cost on jobs; plans
that allow step caching

Revision ID: 0008_eng_presets
Revises: 0007_prompts
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0008_eng_presets'
down_revision = '0007_prompts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('workers',
    sa.Column('id', sa.String(length=80), nullable=False),
    sa.Column('gpu_name', sa.String(length=100), nullable=False),
    sa.Column('memory_total_bytes', sa.BigInteger(), nullable=False),
    sa.Column('memory_free_bytes', sa.BigInteger(), nullable=False),
    sa.Column('models_served', sa.JSON(), nullable=False),
    sa.Column('models_held', sa.JSON(), nullable=False),
    sa.Column('model_load_s', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('memory_total_bytes >= 0 AND memory_free_bytes >= 0', name='memory_nonneg'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('memory_bytes_min', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('memory_mode', sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column('engine_settings', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('model_load_s', sa.Float(), nullable=True))
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('step_cache_allowed', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_column('step_cache_allowed')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('model_load_s')
        batch_op.drop_column('engine_settings')
        batch_op.drop_column('memory_mode')
        batch_op.drop_column('memory_bytes_min')
    op.drop_table('workers')
