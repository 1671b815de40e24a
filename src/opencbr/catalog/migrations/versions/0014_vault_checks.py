"""vault checks: scheduled verification and restore tests per vault, with their last outcome

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 02:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'vault_checks',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('project_id', sa.String(36), nullable=False),
        sa.Column('vault_id', sa.String(36), sa.ForeignKey('vaults.id', ondelete='CASCADE'), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('interval_days', sa.Integer(), nullable=False),
        sa.Column('share_percent', sa.Integer(), nullable=False),
        sa.Column('backup_rule', sa.String(16), nullable=False),
        sa.Column('resource_id', sa.String(36), nullable=False),
        sa.Column('check_command', sa.JSON(), nullable=False),
        sa.Column('check_timeout_seconds', sa.Integer(), nullable=False),
        sa.Column('next_run_at', sa.DateTime(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.Column('last_task_id', sa.String(36), nullable=False),
        sa.Column('last_started_at', sa.DateTime(), nullable=True),
        sa.Column('last_finished_at', sa.DateTime(), nullable=True),
        sa.Column('last_status', sa.String(16), nullable=False),
        sa.Column('last_message', sa.Text(), nullable=False),
        sa.Column('last_backup_ids', sa.JSON(), nullable=False),
        sa.Column('last_backups_checked', sa.Integer(), nullable=False),
        sa.Column('last_damaged_backups', sa.Integer(), nullable=False),
        sa.Column('last_damaged_chunks', sa.Integer(), nullable=False),
        sa.Column('last_recovery_seconds', sa.Float(), nullable=True),
        sa.Column('last_check_seconds', sa.Float(), nullable=True),
        sa.UniqueConstraint('vault_id', 'kind', name='uq_vault_checks_vault_kind'),
    )
    op.create_index('ix_vault_checks_project_id', 'vault_checks', ['project_id'])
    op.create_index('ix_vault_checks_due', 'vault_checks', ['enabled', 'next_run_at'])


def downgrade() -> None:
    op.drop_index('ix_vault_checks_due', table_name='vault_checks')
    op.drop_index('ix_vault_checks_project_id', table_name='vault_checks')
    op.drop_table('vault_checks')
