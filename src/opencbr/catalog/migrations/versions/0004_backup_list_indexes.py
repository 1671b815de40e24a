"""indexes that let the backup list and the vault list count from an index alone

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 16:30:00
"""
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_backups_project_parent_created', 'backups', ['project_id', 'parent_id', 'created_at'])
    op.create_index('ix_backups_vault_usage', 'backups', ['vault_id', 'parent_id', 'resource_id', 'added_bytes'])


def downgrade() -> None:
    op.drop_index('ix_backups_vault_usage', table_name='backups')
    op.drop_index('ix_backups_project_parent_created', table_name='backups')
