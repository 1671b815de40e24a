"""images: one image per backup and project, so that each project a server backup is shared with may make
its own image of it (guide 4.2, 6.2)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 02:30:00
"""
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_constraint('uq_images_backup', type_='unique')
        batch_op.create_unique_constraint('uq_images_backup_project', ['backup_id', 'project_id'])


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_constraint('uq_images_backup_project', type_='unique')
        batch_op.create_unique_constraint('uq_images_backup', ['backup_id'])
