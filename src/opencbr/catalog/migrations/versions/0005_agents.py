"""agents: enrolled agents, their paths, enrolment tokens, the agent CA, and resources.agent_id

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 19:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agent_authority',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('ca_cert', sa.Text(), nullable=False),
    sa.Column('ca_key_sealed', sa.Text(), nullable=False),
    sa.Column('service_cert', sa.Text(), nullable=False),
    sa.Column('service_key_sealed', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('agent_tokens',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('secret_sealed', sa.Text(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('agent_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_tokens_project_id'), ['project_id'], unique=False)

    op.create_table('agents',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=36), nullable=False),
    sa.Column('host_name', sa.String(length=255), nullable=False),
    sa.Column('host_nickname', sa.String(length=255), nullable=False),
    sa.Column('host_ip', sa.String(length=64), nullable=False),
    sa.Column('host_os', sa.String(length=255), nullable=False),
    sa.Column('agent_version', sa.String(length=32), nullable=False),
    sa.Column('agent_type', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('endpoint', sa.String(length=300), nullable=False),
    sa.Column('cert_fingerprint', sa.String(length=80), nullable=True),
    sa.Column('enrolled_at', sa.DateTime(), nullable=True),
    sa.Column('last_active_time', sa.DateTime(), nullable=True),
    sa.Column('last_poll_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('inventory', sa.JSON(), nullable=False),
    sa.Column('bandwidth_limit', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agents_project_id'), ['project_id'], unique=False)

    op.create_table('agent_paths',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('dir_path', sa.Text(), nullable=False),
    sa.Column('exclude_paths', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('agent_paths', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_paths_agent_id'), ['agent_id'], unique=False)

    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.add_column(sa.Column('agent_id', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_resources_agent_id'), ['agent_id'], unique=False)
        batch_op.create_foreign_key('fk_resources_agent_id_agents', 'agents', ['agent_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.drop_constraint('fk_resources_agent_id_agents', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_resources_agent_id'))
        batch_op.drop_column('agent_id')

    with op.batch_alter_table('agent_paths', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_paths_agent_id'))

    op.drop_table('agent_paths')
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agents_project_id'))

    op.drop_table('agents')
    with op.batch_alter_table('agent_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_tokens_project_id'))

    op.drop_table('agent_tokens')
    op.drop_table('agent_authority')
