"""Set-ups the service-level tests share, made through the services with the caller's transaction."""

from __future__ import annotations

from sqlalchemy import event

from opencbr.services import resources, vaults
from tests.support.disks import MiB, make_image


def protected_disk(ctx, tenant, tmp_path, *, seed: int, size: int = 2 * MiB):
    """A registered disk image of ``size`` random bytes in a new disk vault of its own: (disk, vault)."""
    img = make_image(tmp_path / "d.img", size, seed=seed)
    with ctx.tx() as s:
        disk = resources.register_disk(s, ctx, tenant, name="d", path=img)
    with ctx.tx() as s:
        vault = vaults.create_vault(s, ctx, tenant, {
            "name": "v", "billing": {"object_type": "disk", "protect_type": "backup", "size": 10},
            "resources": [{"id": disk.id, "type": "OS::Cinder::Volume"}]}).vault
    return disk, vault


def statements_reading_backups(ctx, run, *, table: str = "backups") -> list[tuple[str, object]]:
    """The statements (with their parameters) that ``run()`` sends reading the backups table (or
    ``table``), for a test to ask the database how it plans them."""
    seen: list[tuple[str, object]] = []

    def note(_conn, _cursor, statement, parameters, *_args):
        if f"FROM {table}" in statement and not statement.startswith(("EXPLAIN", "SET")):
            seen.append((statement, parameters))

    on_each_statement(ctx, run, note)
    return seen


def on_each_statement(ctx, run, note) -> None:
    """``run()``, with ``note(conn, cursor, statement, parameters, context, executemany)`` called before
    each statement it sends to the catalog."""
    event.listen(ctx.engine, "before_cursor_execute", note)
    try:
        run()
    finally:
        event.remove(ctx.engine, "before_cursor_execute", note)
