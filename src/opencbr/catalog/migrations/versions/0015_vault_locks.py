"""vault locks (WORM): a vault's lock, and the administrators allowed to lift governance locks

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 02:45:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'vault_locks',
        sa.Column('vault_id', sa.String(36), sa.ForeignKey('vaults.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('project_id', sa.String(36), nullable=False),
        sa.Column('mode', sa.String(16), nullable=False),
        sa.Column('retention_days', sa.Integer(), nullable=False),
        sa.Column('until', sa.DateTime(), nullable=False),
        sa.Column('set_by', sa.String(64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
    )
    op.create_index('ix_vault_locks_project_id', 'vault_locks', ['project_id'])
    op.create_table(
        'vault_lock_governors',
        sa.Column('user_id', sa.String(36), sa.ForeignKey('users.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('granted_by', sa.String(64), nullable=False),
        sa.Column('granted_at', sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('vault_lock_governors')
    op.drop_index('ix_vault_locks_project_id', table_name='vault_locks')
    op.drop_table('vault_locks')
