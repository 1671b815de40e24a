"""the backup list's default order and its sort by name of one status, each one walk of an index

The default order is now ``created_at DESC, id DESC`` (one direction): (project_id, parent_id,
created_at, id) walked backwards gives it; for ``created_at DESC, id ASC`` over (project_id,
parent_id, created_at) SQLite's planner could choose to sort all the project's backups for every page
(with ANALYZE statistics). The new index replaces that one (a prefix of it). (project_id, parent_id, status, name, id) gives the sort by name
of one status (PostgreSQL walked the status index and sorted that status's backups).

Revision ID: 0018_catalog_order
Revises: 0017
Create Date: 2026-12-05 08:45:00
"""
from alembic import op

revision = '0018_catalog_order'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_backups_project_parent_created_id', 'backups',
                    ['project_id', 'parent_id', 'created_at', 'id'])
    op.drop_index('ix_backups_project_parent_created', table_name='backups')
    op.create_index('ix_backups_project_parent_status_name', 'backups',
                    ['project_id', 'parent_id', 'status', 'name', 'id'])
    # A SQLite catalog analysed before has no statistics for the new indexes, and its planner then
    # prefers an index it has statistics for (migration 0016 measured a 2 M-row sort).
    if op.get_bind().dialect.name == 'sqlite' and op.get_bind().exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
        op.execute("ANALYZE backups")


def downgrade() -> None:
    op.drop_index('ix_backups_project_parent_status_name', table_name='backups')
    op.create_index('ix_backups_project_parent_created', 'backups', ['project_id', 'parent_id', 'created_at'])
    op.drop_index('ix_backups_project_parent_created_id', table_name='backups')
