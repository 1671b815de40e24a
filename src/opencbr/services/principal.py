"""Who is calling: the authenticated identity every service function receives."""

from __future__ import annotations

from dataclasses import dataclass

from opencbr.domain.errors import Forbidden

ROLES = ("admin", "member", "readonly", "backup")
#: The backup-only role (docs/roles.md): it makes backups and sees them and their tasks, and nothing more:
#: no delete, restore, export, browse, retention or policy change. What a protected host (an agent's
#: enrolment, a script on it) should hold, so that its credentials cannot destroy or read its backups.
BACKUP_ONLY = "backup"


@dataclass(frozen=True)
class Principal:
    account_id: str
    project_id: str
    user_id: str
    user_name: str
    role: str
    is_operator: bool = False
    access_key: str = ""
    source_ip: str = ""
    request_id: str = ""

    def require_write(self) -> None:
        """Read-only users can list and show, never change anything; backup-only users can only make
        backups (``require_backup``)."""
        if self.role == BACKUP_ONLY:
            raise Forbidden(f"user {self.user_name} has the backup-only role: it can make backups and see them, "
                            "nothing else", code="APIGW.0303")
        if self.role not in ("admin", "member"):
            raise Forbidden(f"user {self.user_name} has the read-only role and cannot change anything",
                            code="APIGW.0303")

    def require_backup(self) -> None:
        """Making a backup (and enrolling the agent of a host to back up): members, admins and the
        backup-only role."""
        if self.role not in ("admin", "member", BACKUP_ONLY):
            raise Forbidden(f"user {self.user_name} has the read-only role and cannot make backups",
                            code="APIGW.0303")

    def require_data_access(self, action: str) -> None:
        """Reading what is inside a backup (export, browsing its files) or spending the service's I/O on
        it (verify) needs the member role: read-only users see the catalog, not the data."""
        if self.role not in ("admin", "member"):
            raise Forbidden(f"user {self.user_name} has the {self.role} role; {action} needs the member or admin "
                            "role", code="APIGW.0303")

    def require_admin(self) -> None:
        """Tenant administration (projects, users, credentials, audit) needs the admin role."""
        if self.role != "admin":
            raise Forbidden(f"user {self.user_name} is not an administrator of this account", code="APIGW.0303")

    def require_operator(self) -> None:
        """Creating accounts is for the operator of the installation."""
        if not self.is_operator:
            raise Forbidden("only the operator of this installation can do this", code="APIGW.0303")
