"""images: full-server images made from server backups (guide 6.2)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 22:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'images',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('project_id', sa.String(36), nullable=False),
        sa.Column('name', sa.String(128), nullable=False),
        sa.Column('description', sa.String(255), nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('backup_id', sa.String(36), nullable=False),
        sa.Column('vault_id', sa.String(36), nullable=False),
        sa.Column('source_resource_id', sa.String(36), nullable=False),
        sa.Column('source_resource_name', sa.String(255), nullable=False),
        sa.Column('source_image_type', sa.String(16), nullable=False),
        sa.Column('region', sa.String(64), nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('disks', sa.JSON(), nullable=False),
        sa.Column('servers_created', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.UniqueConstraint('backup_id', name='uq_images_backup'),
    )
    op.create_index('ix_images_project_created', 'images', ['project_id', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_images_project_created', table_name='images')
    op.drop_table('images')
