"""sharing backups between projects (guide 4.2): the members of a shared backup, and the bytes of the
accepted shared backups a vault counts against its capacity

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 22:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('vaults') as batch:
        batch.add_column(sa.Column('shared_bytes', sa.BigInteger(), nullable=False, server_default='0'))
    op.create_table(
        'backup_members',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('backup_id', sa.String(36), sa.ForeignKey('backups.id', ondelete='CASCADE'), nullable=False),
        sa.Column('project_id', sa.String(36), nullable=False),
        sa.Column('dest_project_id', sa.String(36), sa.ForeignKey('projects.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('vault_id', sa.String(36), sa.ForeignKey('vaults.id', ondelete='SET NULL'), nullable=True),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('image_id', sa.String(64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.UniqueConstraint('backup_id', 'dest_project_id', name='uq_backup_members_backup_dest'),
    )
    op.create_index('ix_backup_members_backup_id', 'backup_members', ['backup_id'])
    op.create_index('ix_backup_members_vault_id', 'backup_members', ['vault_id'])
    op.create_index('ix_backup_members_dest', 'backup_members', ['dest_project_id', 'status'])


def downgrade() -> None:
    op.drop_table('backup_members')
    with op.batch_alter_table('vaults') as batch:
        batch.drop_column('shared_bytes')
