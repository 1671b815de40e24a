"""The catalog: SQLAlchemy 2 models of everything the control plane knows.

Times are naive UTC. Every tenant-owned row carries ``project_id`` and every query on it is scoped by
project (see ``opencbr.catalog.queries``). Schema changes go through Alembic migrations
(``catalog/migrations``); the models and the newest migration must agree (a test checks it).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    from datetime import UTC

    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


# ---------------------------------------------------------------------------------------------- IAM
class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # CTS tracker switch (guide ch. 11): when off, no new audit events are recorded.
    audit_enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    region: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))  # admin | member | readonly
    # The operator of the installation: may create accounts and see every account's audit trail.
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Credential(Base):
    __tablename__ = "credentials"
    access_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The SK is needed in clear to verify HMAC signatures; it is stored sealed with the master key.
    secret_sealed: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | inactive
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


# ----------------------------------------------------------------------------------------- resources
class Resource(Base):
    """A protectable resource of the ``local`` provider: a disk, a server or a file system."""

    __tablename__ = "resources"
    __table_args__ = (Index("ix_resources_project_type", "project_id", "type"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))  # OS::Cinder::Volume | OS::Nova::Server | OS::Sfs::Turbo
    provider: Mapped[str] = mapped_column(String(32), default="local")
    name: Mapped[str] = mapped_column(String(255))
    # Disk: image file or block device. File system: the directory. Server: empty.
    path: Mapped[str] = mapped_column(Text, default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    region: Mapped[str] = mapped_column(String(64))
    availability_zone: Mapped[str] = mapped_column(String(64), default="")
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    # Disk: available | in-use | error. Server: running | stopped | faulty. File system: available | error.
    status: Mapped[str] = mapped_column(String(16))
    # Disk attached to a server: the server, and whether it is the system disk.
    server_id: Mapped[str | None] = mapped_column(
        ForeignKey("resources.id", ondelete="SET NULL"), nullable=True, index=True
    )
    disk_role: Mapped[str | None] = mapped_column(String(8), nullable=True)  # system | data
    device_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    # Where a local resource's data lives: the host name (or the named group of hosts sharing storage,
    # setting ``host_group``) whose workers can open ``path``. Empty for servers and for resources
    # that any worker can reach.
    host: Mapped[str] = mapped_column(String(255), default="")
    # What was found at ``path`` at registration, refreshed by each backup (device, inode, kind, a
    # fingerprint): a worker refuses to read a different object at the same path.
    identity: Mapped[dict] = mapped_column(JSON, default=dict)
    # Why the resource is in ``error`` (e.g. its path was swapped for a symlink), shown to the user.
    status_reason: Mapped[str] = mapped_column(Text, default="")
    # A resource of an agent's host (provider ``agent``): the agent that reads and writes it. Set to NULL
    # when the agent is unregistered (the resource stays, in error, with its backups).
    agent_id: Mapped[str | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), nullable=True, index=True)
    # [{"key", "value"}] (domain.tags); a vault's bind rules pick resources by them (automatic association).
    tags: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


# -------------------------------------------------------------------------------------------- agents
class Agent(Base):
    """An ``opencbr-agent`` on a protected host (CBR v3 API: agents). The service connects to it at
    ``endpoint`` over mutual TLS and accepts only the certificate whose fingerprint is pinned here;
    ``cert_fingerprint`` is NULL until an agent enrols (a register_agent without a CSR)."""

    __tablename__ = "agents"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    host_name: Mapped[str] = mapped_column(String(255), default="")
    host_nickname: Mapped[str] = mapped_column(String(255), default="")
    host_ip: Mapped[str] = mapped_column(String(64), default="")
    host_os: Mapped[str] = mapped_column(String(255), default="")
    agent_version: Mapped[str] = mapped_column(String(32), default="")
    agent_type: Mapped[str] = mapped_column(String(16), default="native")
    # active | uninstalled (update_agent). Online or offline is computed from last_active_time.
    status: Mapped[str] = mapped_column(String(16), default="active")
    endpoint: Mapped[str] = mapped_column(String(300), default="")
    cert_fingerprint: Mapped[str | None] = mapped_column(String(80), nullable=True)
    enrolled_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_active_time: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_poll_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    # The agent's last inventory answer (host, block devices, paths), as it sent it.
    inventory: Mapped[dict] = mapped_column(JSON, default=dict)
    # Bytes per second the agent's tasks may send or receive (0: no limit).
    bandwidth_limit: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class AgentPath(Base):
    """A directory of an agent's host to protect as a file system (add_agent_path)."""

    __tablename__ = "agent_paths"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    dir_path: Mapped[str] = mapped_column(Text)
    exclude_paths: Mapped[list] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="available")  # available | remove
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AgentToken(Base):
    """A single-use enrolment token (``cbr agent token``): its secret, sealed with the master key, keys
    the HMAC proofs of the enrolment request and answer; it never crosses the wire after it is issued."""

    __tablename__ = "agent_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(String(36), default="")
    secret_sealed: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    agent_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AgentAuthority(Base):
    """The installation's agent CA and the service's client certificate (one row, ``id`` 1), shared by
    every process on every machine; the keys are sealed with the master key."""

    __tablename__ = "agent_authority"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ca_cert: Mapped[str] = mapped_column(Text)
    ca_key_sealed: Mapped[str] = mapped_column(Text)
    service_cert: Mapped[str] = mapped_column(Text)
    service_key_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# -------------------------------------------------------------------------------------------- vaults
class Vault(Base):
    __tablename__ = "vaults"
    __table_args__ = (Index("ix_vaults_project", "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(36), default="")
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255), default="")
    region: Mapped[str] = mapped_column(String(64))
    availability_zone: Mapped[str] = mapped_column(String(64), default="")
    # billing
    object_type: Mapped[str] = mapped_column(String(16))  # server | disk | turbo
    protect_type: Mapped[str] = mapped_column(String(16))  # backup | replication
    consistent_level: Mapped[str] = mapped_column(String(24), default="crash_consistent")
    size_gb: Mapped[int] = mapped_column(BigInteger)
    charging_mode: Mapped[str] = mapped_column(String(16), default="post_paid")
    cloud_type: Mapped[str] = mapped_column(String(16), default="public")
    period_type: Mapped[str | None] = mapped_column(String(8), nullable=True)
    period_num: Mapped[int | None] = mapped_column(Integer, nullable=True)
    is_auto_renew: Mapped[bool] = mapped_column(Boolean, default=False)
    is_auto_pay: Mapped[bool] = mapped_column(Boolean, default=False)
    is_multi_az: Mapped[bool] = mapped_column(Boolean, default=False)
    spec_code: Mapped[str] = mapped_column(String(48))
    status: Mapped[str] = mapped_column(String(16), default="available")  # available|locked|deleting|error
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # options
    auto_bind: Mapped[bool] = mapped_column(Boolean, default=False)
    bind_rules: Mapped[dict] = mapped_column(JSON, default=dict)
    auto_expand: Mapped[bool] = mapped_column(Boolean, default=False)
    smn_notify: Mapped[bool] = mapped_column(Boolean, default=True)
    threshold: Mapped[int] = mapped_column(Integer, default=80)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    enterprise_project_id: Mapped[str] = mapped_column(String(64), default="0")
    backup_name_prefix: Mapped[str] = mapped_column(String(32), default="")
    demand_billing: Mapped[bool] = mapped_column(Boolean, default=True)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    sys_lock_source_service: Mapped[str] = mapped_column(String(32), default="")
    # OpenCBR extension: vault data is encrypted unless created with encryption off.
    encrypted: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    #: Sizes of the backups shared with this project and accepted into this vault (guide 4.2): their data
    #: stays in the sharer's vault, but they count against this vault's capacity (services/memberships.py).
    shared_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class VaultResource(Base):
    """A resource associated with a vault. A resource is in at most one backup vault (guide 1.6)."""

    __tablename__ = "vault_resources"
    __table_args__ = (UniqueConstraint("resource_id", name="uq_vault_resources_resource"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    resource_id: Mapped[str] = mapped_column(ForeignKey("resources.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    # ResourceCreate.extra_info for servers: which disks to include / exclude.
    extra_info: Mapped[dict] = mapped_column(JSON, default=dict)
    # Whether the vault's policy backs it up (ResourceResp.auto_protect); set_vault_resource suspends it.
    auto_protect: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# --------------------------------------------------------------------------------------------- tasks
class Task(Base):
    """A long operation (the guide's task, the API's operation log), claimed by workers with a lease."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_project_created", "project_id", "created_at"),
        Index("ix_tasks_claim", "status", "run_after"),
        # The claim's fair order counts each vault's tasks started since the backlog began (migration 0016).
        Index("ix_tasks_started", "started_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36))
    # backup | restore | delete | vault_delete | remove_resource | replication | copy | sync | ...
    operation_type: Mapped[str] = mapped_column(String(32))
    # waiting | running | success | failed | skipped | timeout
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    provider_id: Mapped[str] = mapped_column(String(36), default="")
    vault_id: Mapped[str] = mapped_column(String(36), default="", index=True)
    vault_name: Mapped[str] = mapped_column(String(64), default="")
    resource_id: Mapped[str] = mapped_column(String(36), default="")
    resource_name: Mapped[str] = mapped_column(String(255), default="")
    resource_type: Mapped[str] = mapped_column(String(32), default="")
    checkpoint_id: Mapped[str] = mapped_column(String(36), default="")
    policy_id: Mapped[str] = mapped_column(String(36), default="")
    request_id: Mapped[str] = mapped_column(String(64), default="")
    # What the worker needs to run it (handler-specific) and what the API shows in extra_info.
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    extra_info: Mapped[dict] = mapped_column(JSON, default=dict)
    error_code: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    # claiming
    run_after: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    lease_owner: Mapped[str] = mapped_column(String(64), default="")
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Only a worker of this host (or host group) may claim the task: the data it reads or writes lives
    # there. Empty: any worker.
    required_host: Mapped[str] = mapped_column(String(255), default="")


# --------------------------------------------------------------------------------------------- audit
class AuditEvent(Base):
    """An append-only record of a key operation (guide ch. 11, CTS traces)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_account_time", "account_id", "time"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    account_id: Mapped[str] = mapped_column(String(36))
    project_id: Mapped[str] = mapped_column(String(36), default="")
    user_id: Mapped[str] = mapped_column(String(36), default="")
    user_name: Mapped[str] = mapped_column(String(64), default="")
    access_key: Mapped[str] = mapped_column(String(32), default="")
    source_ip: Mapped[str] = mapped_column(String(64), default="")
    trace_name: Mapped[str] = mapped_column(String(48))  # createVault, deleteVault, ...
    resource_type: Mapped[str] = mapped_column(String(16))  # vault | policy | backup | iam
    resource_id: Mapped[str] = mapped_column(String(36), default="")
    resource_name: Mapped[str] = mapped_column(String(255), default="")
    request: Mapped[dict] = mapped_column(JSON, default=dict)
    outcome: Mapped[str] = mapped_column(String(16))  # success | failure
    http_status: Mapped[int] = mapped_column(Integer, default=200)
    error_code: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    request_id: Mapped[str] = mapped_column(String(64), default="")


# ------------------------------------------------------------------------------------------- backups
class Checkpoint(Base):
    """One backup request on a vault (the API's checkpoint): one backup per resource it covers."""

    __tablename__ = "checkpoints"
    __table_args__ = (Index("ix_checkpoints_project", "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36))
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="protecting")
    name: Mapped[str] = mapped_column(String(80), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    retention_duration_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    auto_trigger: Mapped[bool] = mapped_column(Boolean, default=False)
    policy_id: Mapped[str] = mapped_column(String(36), default="")
    skipped: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Backup(Base):
    """A backup of one resource at one point in time. A server backup has one child backup per disk
    (``parent_id`` = the server backup); disk and file-system backups have none."""

    __tablename__ = "backups"
    __table_args__ = (
        Index("ix_backups_project_created", "project_id", "created_at"),
        Index("ix_backups_vault_resource", "vault_id", "resource_id", "created_at"),
        # The backup list's default order (top-level backups of a project, newest first, ties by id: one
        # backward walk, migration 0018), and the vault list's backup count and size per resource, each
        # read from the index alone: without them every list request read every backup row of the project
        # (bench/README.md, API section).
        Index("ix_backups_project_parent_created_id", "project_id", "parent_id", "created_at", "id"),
        Index("ix_backups_vault_usage", "vault_id", "parent_id", "resource_id", "added_bytes"),
        # The list filtered by vault, by resource or by status, newest first, and sorted by name, at
        # millions of rows (migration 0016, bench/catalog.py).
        Index("ix_backups_vault_parent_created", "vault_id", "parent_id", "created_at"),
        Index("ix_backups_resource_parent_created", "resource_id", "parent_id", "created_at"),
        Index("ix_backups_project_parent_status_created", "project_id", "parent_id", "status", "created_at"),
        Index("ix_backups_project_parent_name", "project_id", "parent_id", "name"),
        # A server backup's disk backups. Partial: on SQLite a full index of parent_id counted every
        # top-level backup's NULL as one value, and its statistics then made the planner scan all 2 M
        # backups for each backup deleted (migration 0019_sched; bench/README.md).
        Index("ix_backups_parent", "parent_id", sqlite_where=text("parent_id IS NOT NULL"),
              postgresql_where=text("parent_id IS NOT NULL")),
        # The sort by name of one status, to its tie-break (migration 0018; PostgreSQL walked the status
        # index and sorted all that status's backups).
        Index("ix_backups_project_parent_status_name", "project_id", "parent_id", "status", "name", "id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36))
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"))
    checkpoint_id: Mapped[str] = mapped_column(String(36), default="", index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"), nullable=True)
    name: Mapped[str] = mapped_column(String(80))
    description: Mapped[str] = mapped_column(String(255), default="")
    resource_id: Mapped[str] = mapped_column(String(36))
    resource_name: Mapped[str] = mapped_column(String(255), default="")
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    resource_az: Mapped[str] = mapped_column(String(64), default="")
    #: For a disk backup inside a server backup: the disk's role and position on the server.
    disk_role: Mapped[str | None] = mapped_column(String(8), nullable=True)
    device_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    image_type: Mapped[str] = mapped_column(String(16), default="backup")  # backup | replication
    # protecting | available | restoring | deleting | error (the API's names; guide 4.1 table 4-1)
    status: Mapped[str] = mapped_column(String(16), default="protecting")
    auto_trigger: Mapped[bool] = mapped_column(Boolean, default=False)
    policy_id: Mapped[str] = mapped_column(String(36), default="")
    #: The retention rule in force when an automatic backup was made (domain.retention, guide 13.5.2).
    retention_rule: Mapped[str] = mapped_column(String(64), default="")
    incremental: Mapped[bool] = mapped_column(Boolean, default=False)
    full_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    used_by_image: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Logical size (bytes of the disk or tree) and stored bytes this backup added to the vault.
    logical_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    added_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Consistency method, disk layout, engine statistics, warnings.
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    error_code: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    task_id: Mapped[str] = mapped_column(String(36), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    protected_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: A replica (image_type "replication"): the backup it was replicated from, and that backup's region.
    source_backup_id: Mapped[str] = mapped_column(String(36), default="", index=True)
    source_region: Mapped[str] = mapped_column(String(64), default="")



class BackupUsage(Base):
    """How many top-level backups, and how many stored bytes they added, per vault, resource and status.
    The database keeps it (triggers on ``backups``, migration 0016): nothing writes it but them. Counts,
    storage usage and the vault list read it instead of counting millions of backup rows per request."""

    __tablename__ = "backup_usage"
    __table_args__ = (Index("ix_backup_usage_project_resource", "project_id", "resource_id"),)
    vault_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(36))
    #: As the newest backup counted here named them.
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_name: Mapped[str] = mapped_column(String(255))
    backup_count: Mapped[int] = mapped_column(BigInteger)
    backup_bytes: Mapped[int] = mapped_column(BigInteger)

# ------------------------------------------------------------------------------------------ regions
class Region(Base):
    """A linked destination region (another OpenCBR installation) this one replicates into: its
    replication receiver's endpoint, the certificate pinned there, and the link credential it issued."""

    __tablename__ = "regions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    endpoint: Mapped[str] = mapped_column(String(255))
    credential_id: Mapped[str] = mapped_column(String(36))
    secret_sealed: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class RegionCredential(Base):
    """A link credential this installation issued to a source region: it allows replication traffic into
    this installation and nothing else. ``account_map``: source account name -> account name here (the
    accounts whose names differ; the others map by name)."""

    __tablename__ = "region_credentials"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    secret_sealed: Mapped[str] = mapped_column(Text)
    account_map: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ReceiverIdentity(Base):
    """The replication receiver's certificate (one row; key sealed with the master key), shared by every
    worker process that may serve it."""

    __tablename__ = "receiver_identity"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cert: Mapped[str] = mapped_column(Text)
    key_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ReplicationRecord(Base):
    """One replication of a source backup to a destination region (the API's replication_records)."""

    __tablename__ = "replication_records"
    __table_args__ = (Index("ix_replication_records_backup", "source_backup_id", "destination_region"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36))
    vault_id: Mapped[str] = mapped_column(String(36), default="")
    source_backup_id: Mapped[str] = mapped_column(String(36))
    source_checkpoint_id: Mapped[str] = mapped_column(String(36), default="")
    destination_region: Mapped[str] = mapped_column(String(64))
    destination_project_id: Mapped[str] = mapped_column(String(36))
    destination_vault_id: Mapped[str] = mapped_column(String(36))
    destination_backup_id: Mapped[str] = mapped_column(String(36), default="")
    destination_checkpoint_id: Mapped[str] = mapped_column(String(36), default="")
    # replicating | available | failed
    status: Mapped[str] = mapped_column(String(16), default="replicating")
    auto_trigger: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    fail_code: Mapped[str] = mapped_column(String(64), default="")
    fail_reason: Mapped[str] = mapped_column(Text, default="")
    task_id: Mapped[str] = mapped_column(String(36), default="")
    #: What crossed the link (bytes sent and received), for the operator.
    wire_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


# ------------------------------------------------------------------------------------------ policies
class Policy(Base):
    """A backup or replication policy (guide ch. 5); ``spec`` is the normalised wire form."""

    __tablename__ = "policies"
    __table_args__ = (Index("ix_policies_project", "project_id", "operation_type"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(String(64))
    operation_type: Mapped[str] = mapped_column(String(16))  # backup | replication
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    spec: Mapped[dict] = mapped_column(JSON, default=dict)
    trigger_id: Mapped[str] = mapped_column(String(36), default=new_id)
    #: The schedule's anchor: when the trigger was created or last changed (guide 5.2).
    trigger_start: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class PolicyBinding(Base):
    """A policy applied to a vault; one policy per operation type per vault (guide 1.6)."""

    __tablename__ = "policy_bindings"
    __table_args__ = (UniqueConstraint("vault_id", "operation_type", name="uq_policy_bindings_vault_op"),
                      Index("ix_policy_bindings_next_due", "next_due_at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"))
    policy_id: Mapped[str] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"), index=True)
    operation_type: Mapped[str] = mapped_column(String(16))
    destination_vault_id: Mapped[str] = mapped_column(String(36), default="")
    destination_project_id: Mapped[str] = mapped_column(String(36), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: No execution of this binding is due before this time (services/executions.py); NULL: not known
    #: yet. The tick reads only the bindings due by this index, not every binding's state. Never later
    #: than the true next execution: a policy's new execution times set it back to NULL.
    next_due_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class PolicyExecution(Base):
    """One due execution of a policy on a vault. The unique key makes firing exactly-once: a second
    scheduler inserting the same execution fails and fires nothing."""

    __tablename__ = "policy_executions"
    __table_args__ = (UniqueConstraint("policy_id", "vault_id", "execution_id", name="uq_policy_executions"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(36))
    policy_id: Mapped[str] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"), index=True)
    vault_id: Mapped[str] = mapped_column(String(36))
    execution_id: Mapped[str] = mapped_column(String(32))  # the scheduled UTC instant, 20240806T020000Z
    scheduled_at: Mapped[datetime] = mapped_column(DateTime)
    fired_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    decision: Mapped[str] = mapped_column(String(8))  # fire | skip | fail
    reason: Mapped[str] = mapped_column(Text, default="")
    checkpoint_id: Mapped[str] = mapped_column(String(36), default="")
    scheduler_id: Mapped[str] = mapped_column(String(64), default="")


class SweepCursor(Base):
    """Where a pass-by-pass sweep stopped (services/retention.py): the next pass continues after this
    (vault, resource) pair, so each pass does a bounded share of the catalog and a restart loses nothing."""

    __tablename__ = "sweep_cursors"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    vault_id: Mapped[str] = mapped_column(String(36), default="")
    resource_id: Mapped[str] = mapped_column(String(36), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# ------------------------------------------------------------------------------------------- sharing
class BackupMember(Base):
    """A backup shared with another project (guide 4.2; the API's members). ``dest_project_id`` is also the
    member's id on the wire. Accepted, it names the recipient's vault that holds it and its size counted
    there; the data stays in the sharer's vault."""

    __tablename__ = "backup_members"
    __table_args__ = (UniqueConstraint("backup_id", "dest_project_id", name="uq_backup_members_backup_dest"),
                      Index("ix_backup_members_dest", "dest_project_id", "status"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backup_id: Mapped[str] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(String(36))  # the sharer's
    dest_project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | accepted | rejected
    vault_id: Mapped[str | None] = mapped_column(
        ForeignKey("vaults.id", ondelete="SET NULL"), nullable=True, index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    image_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


# ------------------------------------------------------------------------------ organization policies
class OrganizationPolicy(Base):
    """A backup or replication policy the operator deploys to every project of chosen accounts (or of all
    accounts): ``spec`` is the policy document each project receives; ``account_ids`` the target accounts
    when ``all_accounts`` is false. ``account_id`` is the operator's account (the API's ``domain_id``)."""

    __tablename__ = "organization_policies"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255), default="")
    operation_type: Mapped[str] = mapped_column(String(16))  # backup | replication
    spec: Mapped[dict] = mapped_column(JSON, default=dict)
    all_accounts: Mapped[bool] = mapped_column(Boolean, default=True)
    account_ids: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OrganizationPolicyDeployment(Base):
    """An organization policy in one project: the project's policy it made (``policy_id``), or why it
    could not (``status`` failed, ``reason``). A policy named here is managed: its project may apply it to
    vaults but not change or delete it."""

    __tablename__ = "organization_policy_deployments"
    __table_args__ = (UniqueConstraint("organization_policy_id", "project_id", name="uq_org_policy_deployments"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_policy_id: Mapped[str] = mapped_column(ForeignKey("organization_policies.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(String(36))
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    policy_id: Mapped[str] = mapped_column(String(36), default="", index=True)
    status: Mapped[str] = mapped_column(String(16))  # success | failed
    reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# -------------------------------------------------------------------------------------------- quotas
class ProjectQuota(Base):
    """The operator's limit on one counted thing of one project (guide ch. 12: tenants see their quotas,
    the operator adjusts them), overriding the installation's default (``quota_*`` settings)."""

    __tablename__ = "project_quotas"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    #: vault | backup | capacity | policy (services/quotas.py)
    quota_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: the limit; -1 for none
    limit: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


# -------------------------------------------------------------------------------------------- images
class Image(Base):
    """A full-server image (guide 6.2): made from one server backup that holds the system disk, one image
    per backup and project (a server backup shared with other projects may have one in each). It copies
    nothing: its disks are the backup's disk backups, which is why the owner's backup cannot be deleted
    while the owner's image exists (a recipient's image goes with the share, guide 4.2). ``disks``: [{backup_id, disk_role, device_index,
    size_bytes, resource_name}], the system disk first. ``project_id`` is the image's owner (the backup
    may be another project's, shared with it)."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("backup_id", "project_id", name="uq_images_backup_project"),
                      Index("ix_images_project_created", "project_id", "created_at"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    backup_id: Mapped[str] = mapped_column(String(36))
    vault_id: Mapped[str] = mapped_column(String(36))
    source_resource_id: Mapped[str] = mapped_column(String(36), default="")
    source_resource_name: Mapped[str] = mapped_column(String(255), default="")
    source_image_type: Mapped[str] = mapped_column(String(16), default="backup")  # backup | replication
    region: Mapped[str] = mapped_column(String(64), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    disks: Mapped[list] = mapped_column(JSON, default=list)
    servers_created: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


# -------------------------------------------------------------------------------------------- vault locks
class VaultLockRow(Base):
    """A vault's lock (WORM; docs/vault-lock.md, ``domain.vault_lock``): while ``until`` has not come,
    every backup of the vault is kept ``retention_days`` after it was made. The vault's repository keeps
    the same record, so a catalog rebuild restores it. ``mode``: governance | compliance."""

    __tablename__ = "vault_locks"
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    retention_days: Mapped[int] = mapped_column(Integer)
    until: Mapped[datetime] = mapped_column(DateTime)
    set_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class VaultLockGovernor(Base):
    """An administrator the operator allowed to lift or shorten governance locks (docs/vault-lock.md)."""

    __tablename__ = "vault_lock_governors"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    granted_by: Mapped[str] = mapped_column(String(64), default="")
    granted_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
# ------------------------------------------------------------------------------------------- metrics
class VaultMetricPoint(Base):
    """One point of a vault's usage series (guide 10.1: used_vault_size, vault_util, raw period 15 min).
    ``period`` is the point's resolution in seconds: 900 (raw samples), 3600 and 86400 (aggregated as
    samples arrive); ``at`` the start of its period. Each resolution keeps a bounded history
    (services/metrics.py)."""

    __tablename__ = "vault_metric_points"
    __table_args__ = (UniqueConstraint("vault_id", "period", "at", name="uq_vault_metric_points"),
                      Index("ix_vault_metric_points_period_at", "period", "at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(36))
    period: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime)
    samples: Mapped[int] = mapped_column(Integer, default=1)
    used_avg: Mapped[float] = mapped_column(Float)
    used_min: Mapped[int] = mapped_column(BigInteger)
    used_max: Mapped[int] = mapped_column(BigInteger)
    util_avg: Mapped[float] = mapped_column(Float)
    util_min: Mapped[float] = mapped_column(Float)
    util_max: Mapped[float] = mapped_column(Float)


# -------------------------------------------------------------------------------------------- alarms
class AlarmTarget(Base):
    """Where alarms go: a webhook (``address`` a URL; the body signed with ``secret_sealed``) or an
    email address (sent through the operator's SMTP server). A tenant's target (``project_id`` set)
    receives its project's alarms; an operator's (``project_id`` empty) those of every project."""

    __tablename__ = "alarm_targets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(String(36))
    project_id: Mapped[str] = mapped_column(String(36), default="", index=True)
    kind: Mapped[str] = mapped_column(String(16))  # webhook | email
    address: Mapped[str] = mapped_column(String(512))
    secret_sealed: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AlarmEvent(Base):
    """Something worth an alarm, recorded once (``key`` is unique: a crossing, a failed task)."""

    __tablename__ = "alarm_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(96), unique=True)
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    vault_id: Mapped[str] = mapped_column(String(36), default="")
    kind: Mapped[str] = mapped_column(String(32))  # vault_threshold | task_failed
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AlarmDelivery(Base):
    """One event to one target, retried with backoff until delivered or out of attempts."""

    __tablename__ = "alarm_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "target_id", name="uq_alarm_deliveries"),
                      Index("ix_alarm_deliveries_due", "status", "next_attempt_at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("alarm_events.id", ondelete="CASCADE"))
    target_id: Mapped[str] = mapped_column(ForeignKey("alarm_targets.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(String(36), default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str] = mapped_column(Text, default="")
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class VaultAlarmState(Base):
    """Whether a vault's usage was at or above its threshold at the last sample: an alarm fires on the
    crossing upwards only, once per crossing."""

    __tablename__ = "vault_alarm_states"
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True)
    above: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
# -------------------------------------------------------------------------------- vault checks
class VaultCheck(Base):
    """A vault's scheduled check (services/verification.py, services/restore_tests.py): ``kind`` ``verify``
    (re-read a share of the backups' chunks) or ``restore_test`` (restore one backup to a scratch place and
    check it), every ``interval_days`` from ``next_run_at``. The ``last_*`` fields are the last run's
    outcome, kept here so a metrics collector reads one row per vault and kind instead of the task list."""

    __tablename__ = "vault_checks"
    __table_args__ = (UniqueConstraint("vault_id", "kind", name="uq_vault_checks_vault_kind"),
                      Index("ix_vault_checks_due", "enabled", "next_run_at"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # verify | restore_test
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    interval_days: Mapped[int] = mapped_column(Integer, default=7)
    #: verify: the share of the vault's backups each run re-reads (100: all)
    share_percent: Mapped[int] = mapped_column(Integer, default=100)
    #: restore_test: which backup (latest | oldest), of which resource ("" for any)
    backup_rule: Mapped[str] = mapped_column(String(16), default="latest")
    resource_id: Mapped[str] = mapped_column(String(36), default="")
    #: restore_test: the operator's own check, run in the scratch place (argv list), and its time limit
    check_command: Mapped[list] = mapped_column(JSON, default=list)
    check_timeout_seconds: Mapped[int] = mapped_column(Integer, default=600)
    next_run_at: Mapped[datetime] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    last_task_id: Mapped[str] = mapped_column(String(36), default="")
    last_started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_status: Mapped[str] = mapped_column(String(16), default="")  # "" | running | success | failed | skipped
    last_message: Mapped[str] = mapped_column(Text, default="")
    last_backup_ids: Mapped[list] = mapped_column(JSON, default=list)
    last_backups_checked: Mapped[int] = mapped_column(Integer, default=0)
    last_damaged_backups: Mapped[int] = mapped_column(Integer, default=0)
    last_damaged_chunks: Mapped[int] = mapped_column(Integer, default=0)
    #: restore_test: seconds the restore itself took (a measured recovery time), and the check after it
    last_recovery_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_check_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
