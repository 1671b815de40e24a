"""vault usage series (guide 10.1) and alarms: targets, events, deliveries, threshold states

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 02:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'vault_metric_points',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('vault_id', sa.String(36), sa.ForeignKey('vaults.id', ondelete='CASCADE'), nullable=False),
        sa.Column('project_id', sa.String(36), nullable=False),
        sa.Column('period', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('samples', sa.Integer(), nullable=False),
        sa.Column('used_avg', sa.Float(), nullable=False),
        sa.Column('used_min', sa.BigInteger(), nullable=False),
        sa.Column('used_max', sa.BigInteger(), nullable=False),
        sa.Column('util_avg', sa.Float(), nullable=False),
        sa.Column('util_min', sa.Float(), nullable=False),
        sa.Column('util_max', sa.Float(), nullable=False),
        sa.UniqueConstraint('vault_id', 'period', 'at', name='uq_vault_metric_points'),
    )
    op.create_index('ix_vault_metric_points_period_at', 'vault_metric_points', ['period', 'at'])
    op.create_table(
        'alarm_targets',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('account_id', sa.String(36), nullable=False),
        sa.Column('project_id', sa.String(36), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('address', sa.String(512), nullable=False),
        sa.Column('secret_sealed', sa.Text(), nullable=False),
        sa.Column('description', sa.String(255), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
    )
    op.create_index('ix_alarm_targets_project_id', 'alarm_targets', ['project_id'])
    op.create_table(
        'alarm_events',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('key', sa.String(96), nullable=False, unique=True),
        sa.Column('project_id', sa.String(36), nullable=False),
        sa.Column('vault_id', sa.String(36), nullable=False),
        sa.Column('kind', sa.String(32), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
    )
    op.create_index('ix_alarm_events_project_id', 'alarm_events', ['project_id'])
    op.create_table(
        'alarm_deliveries',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('event_id', sa.Integer(), sa.ForeignKey('alarm_events.id', ondelete='CASCADE'), nullable=False),
        sa.Column('target_id', sa.String(36), sa.ForeignKey('alarm_targets.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('project_id', sa.String(36), nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=False),
        sa.Column('delivered_at', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.UniqueConstraint('event_id', 'target_id', name='uq_alarm_deliveries'),
    )
    op.create_index('ix_alarm_deliveries_due', 'alarm_deliveries', ['status', 'next_attempt_at'])
    op.create_index('ix_alarm_deliveries_target_id', 'alarm_deliveries', ['target_id'])
    op.create_table(
        'vault_alarm_states',
        sa.Column('vault_id', sa.String(36), sa.ForeignKey('vaults.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('above', sa.Boolean(), nullable=False),
        sa.Column('changed_at', sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in ('vault_alarm_states', 'alarm_deliveries', 'alarm_events', 'alarm_targets', 'vault_metric_points'):
        op.drop_table(table)
