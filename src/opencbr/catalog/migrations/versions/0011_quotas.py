"""per-project quotas set by the operator (the defaults are settings)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 22:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'project_quotas',
        sa.Column('project_id', sa.String(36), sa.ForeignKey('projects.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('quota_type', sa.String(16), primary_key=True),
        sa.Column('limit', sa.BigInteger(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('project_quotas')
