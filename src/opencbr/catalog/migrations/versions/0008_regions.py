"""regions and cross-region replication: linked destination regions, the link credentials this
installation issued, the replication receiver's certificate, replication records, replicas' source ids

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 20:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'regions',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('name', sa.String(64), nullable=False, unique=True),
        sa.Column('endpoint', sa.String(255), nullable=False),
        sa.Column('credential_id', sa.String(36), nullable=False),
        sa.Column('secret_sealed', sa.Text(), nullable=False),
        sa.Column('fingerprint', sa.String(80), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
    )
    op.create_table(
        'region_credentials',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('name', sa.String(64), nullable=False),
        sa.Column('secret_sealed', sa.Text(), nullable=False),
        sa.Column('account_map', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
    )
    op.create_table(
        'receiver_identity',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column('cert', sa.Text(), nullable=False),
        sa.Column('key_sealed', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
    )
    op.create_table(
        'replication_records',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('project_id', sa.String(36), nullable=False),
        sa.Column('vault_id', sa.String(36), nullable=False),
        sa.Column('source_backup_id', sa.String(36), nullable=False),
        sa.Column('source_checkpoint_id', sa.String(36), nullable=False),
        sa.Column('destination_region', sa.String(64), nullable=False),
        sa.Column('destination_project_id', sa.String(36), nullable=False),
        sa.Column('destination_vault_id', sa.String(36), nullable=False),
        sa.Column('destination_backup_id', sa.String(36), nullable=False),
        sa.Column('destination_checkpoint_id', sa.String(36), nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('auto_trigger', sa.Boolean(), nullable=False),
        sa.Column('progress', sa.Integer(), nullable=False),
        sa.Column('fail_code', sa.String(64), nullable=False),
        sa.Column('fail_reason', sa.Text(), nullable=False),
        sa.Column('task_id', sa.String(36), nullable=False),
        sa.Column('wire_bytes', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
    )
    op.create_index('ix_replication_records_backup', 'replication_records',
                    ['source_backup_id', 'destination_region'])
    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source_backup_id', sa.String(36), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('source_region', sa.String(64), nullable=False, server_default=''))
        batch_op.create_index('ix_backups_source_backup_id', ['source_backup_id'])


def downgrade() -> None:
    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.drop_index('ix_backups_source_backup_id')
        batch_op.drop_column('source_region')
        batch_op.drop_column('source_backup_id')
    op.drop_index('ix_replication_records_backup', table_name='replication_records')
    op.drop_table('replication_records')
    op.drop_table('receiver_identity')
    op.drop_table('region_credentials')
    op.drop_table('regions')
