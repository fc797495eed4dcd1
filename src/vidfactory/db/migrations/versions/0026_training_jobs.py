"""training jobs: a job type on the queue (video | training) and a training job's own description; plan
limits on style training (dataset size, steps, trainings at once)

Revision ID: 0026_training_jobs
Revises: 0025_observability
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa


revision = '0026_training_jobs'
down_revision = '0025_observability'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('job_type', sa.String(length=16), nullable=False, server_default='video'))
        batch_op.add_column(sa.Column('training', sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('training_samples_max', sa.Integer(), nullable=False, server_default='50'))
        batch_op.add_column(sa.Column('training_steps_max', sa.Integer(), nullable=False, server_default='2000'))
        batch_op.add_column(sa.Column('concurrent_trainings', sa.Integer(), nullable=False, server_default='1'))


def downgrade() -> None:
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_column('concurrent_trainings')
        batch_op.drop_column('training_steps_max')
        batch_op.drop_column('training_samples_max')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('training')
        batch_op.drop_column('job_type')
