"""resource tags (automatic association picks resources by them); associated resources follow the vault's
policy unless suspended (set_vault_resource)

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-03 19:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tags', sa.JSON(), nullable=False, server_default='[]'))
    # ``auto_protect`` was never set before: every associated resource followed the vault's policy.
    op.execute(sa.text("UPDATE vault_resources SET auto_protect = :yes").bindparams(yes=True))


def downgrade() -> None:
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.drop_column('tags')
