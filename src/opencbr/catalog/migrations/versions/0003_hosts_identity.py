"""resource host affinity and identity, task host affinity

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 13:05:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.add_column(sa.Column('host', sa.String(length=255), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('identity', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('status_reason', sa.Text(), nullable=False, server_default=''))
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('required_host', sa.String(length=255), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('required_host')
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.drop_column('status_reason')
        batch_op.drop_column('identity')
        batch_op.drop_column('host')
