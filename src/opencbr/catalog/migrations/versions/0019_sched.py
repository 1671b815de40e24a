"""scheduler passes bounded on a catalog of millions: a next-due time per policy binding (the tick reads
only the due ones), a persistent cursor for the retention sweep (each pass does a bounded share), and
the index of backups.parent_id made partial (non-NULL only): SQLite's statistics of the full one, where
every top-level backup's NULL counted as one value, made it scan every backup to find a backup's
children, once per backup deleted

Revision ID: 0019_sched
Revises: 0018_catalog_order
Create Date: 2026-12-05 09:00:00
"""
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = '0019_sched'
down_revision = '0018_catalog_order'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: not known yet; the first tick computes it from the binding's state.
    with op.batch_alter_table('policy_bindings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_due_at', sa.DateTime(), nullable=True))
        batch_op.create_index('ix_policy_bindings_next_due', ['next_due_at'])
    cursors = op.create_table(
        'sweep_cursors',
        sa.Column('name', sa.String(32), primary_key=True),
        sa.Column('vault_id', sa.String(36), nullable=False),
        sa.Column('resource_id', sa.String(36), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
    )
    # The retention sweep's cursor exists from the start (services/retention.py, CURSOR): two schedulers
    # starting together update one row, neither inserts it (one of the two inserts would fail).
    op.bulk_insert(cursors, [{'name': 'retention', 'vault_id': '', 'resource_id': '',
                              'updated_at': datetime(1970, 1, 1)}])
    # Dropping the index drops its statistics too; the new one has none until the next ANALYZE, and
    # SQLite's default estimate for an equality on an index is selective.
    op.drop_index('ix_backups_parent_id', table_name='backups')
    op.create_index('ix_backups_parent', 'backups', ['parent_id'], sqlite_where=sa.text('parent_id IS NOT NULL'),
                    postgresql_where=sa.text('parent_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_backups_parent', table_name='backups')
    op.create_index('ix_backups_parent_id', 'backups', ['parent_id'])
    op.drop_table('sweep_cursors')
    with op.batch_alter_table('policy_bindings', schema=None) as batch_op:
        batch_op.drop_index('ix_policy_bindings_next_due')
        batch_op.drop_column('next_due_at')
