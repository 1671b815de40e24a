"""organization policies: policies the operator deploys to the projects of chosen accounts, and where
each one was deployed (or why not)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 22:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'organization_policies',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('account_id', sa.String(36), nullable=False),
        sa.Column('name', sa.String(64), nullable=False),
        sa.Column('description', sa.String(255), nullable=False),
        sa.Column('operation_type', sa.String(16), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('all_accounts', sa.Boolean(), nullable=False),
        sa.Column('account_ids', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
    )
    op.create_table(
        'organization_policy_deployments',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('organization_policy_id', sa.String(36),
                  sa.ForeignKey('organization_policies.id', ondelete='CASCADE'), nullable=False),
        sa.Column('account_id', sa.String(36), nullable=False),
        sa.Column('project_id', sa.String(36), nullable=False),
        sa.Column('policy_id', sa.String(36), nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.UniqueConstraint('organization_policy_id', 'project_id', name='uq_org_policy_deployments'),
    )
    op.create_index('ix_organization_policy_deployments_project_id', 'organization_policy_deployments',
                    ['project_id'])
    op.create_index('ix_organization_policy_deployments_policy_id', 'organization_policy_deployments',
                    ['policy_id'])


def downgrade() -> None:
    op.drop_index('ix_organization_policy_deployments_policy_id', table_name='organization_policy_deployments')
    op.drop_index('ix_organization_policy_deployments_project_id', table_name='organization_policy_deployments')
    op.drop_table('organization_policy_deployments')
    op.drop_table('organization_policies')
