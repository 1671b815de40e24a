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
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
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
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


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
    auto_protect: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# --------------------------------------------------------------------------------------------- tasks
class Task(Base):
    """A long operation (the guide's task, the API's operation log), claimed by workers with a lease."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_project_created", "project_id", "created_at"),
        Index("ix_tasks_claim", "status", "run_after"),
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
