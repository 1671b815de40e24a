"""MariaDB / MySQL: ``FLUSH TABLES WITH READ LOCK`` held by one client session across the snapshot.

Pre-freeze: server-side limits first (``lock_wait_timeout`` so the lock request gives up by itself,
``wait_timeout`` so the server drops the session, and with it the lock, if the agent goes quiet past
the hold), then the lock, then the binary log position (``SHOW MASTER STATUS``, and the GTID position
on MariaDB) that matches the locked state. Post-thaw: ``UNLOCK TABLES``. A step that times out gets its
client killed and its connection ``KILL``-ed from a second session: the lock is never left held.
"""

from __future__ import annotations

import math
import os

from .client import MariadbClient, mariadb_argv
from .database import DatabaseHook
from .outcome import HookError
from .plan import MysqlTarget


class MysqlHook(DatabaseHook):
    kind = "mysql"
    READY = "can be quiesced (FLUSH TABLES WITH READ LOCK)"

    def __init__(self, target: MysqlTarget, client: str):
        super().__init__(target)
        self.program = client
        self.client: MariadbClient | None = None
        self.connection_id: str | None = None

    def _connect(self) -> MariadbClient:
        t = self.target
        argv = mariadb_argv(self.program, socket=t.socket, host=t.host, port=t.port, user=t.user,
                            defaults_file=t.defaults_file)
        env = {k: v for k, v in os.environ.items() if k != "MYSQL_PWD"}
        return MariadbClient(argv, env=env, name=t.name)

    def _facts(self, c: MariadbClient, timeout: float) -> dict:
        (row,) = c.execute("SELECT 'ROW', CONNECTION_ID(), @@version, @@log_bin, CURRENT_USER()", timeout)
        return {"connection_id": row[0], "version": row[1], "log_bin": row[2] == "1", "user": row[3]}

    def freeze(self, timeout: float, hold_timeout: float) -> bool:
        o = self.outcome
        try:
            self.client = c = self._connect()
            facts = self._facts(c, timeout)
            self.connection_id = facts["connection_id"]
            o.details.update(server_version=facts["version"], data_dir=self.target.data_dir)
            limits = (f"SET SESSION lock_wait_timeout = {math.ceil(timeout)}; "
                      f"SET SESSION wait_timeout = {math.ceil(hold_timeout + timeout)}")
            if "mariadb" in facts["version"].lower():  # MariaDB's limit covers every statement
                limits += f"; SET SESSION max_statement_time = {timeout:g}"
            c.execute(limits, timeout)
            c.execute("FLUSH TABLES WITH READ LOCK", timeout)
            o.ok, o.message = True, "tables flushed and read-locked"
            if facts["log_bin"]:
                self._binlog_position(c, timeout)
            return True
        except HookError as e:
            o.fail(f"pre-freeze failed: {e}")
            self._abort(timeout)
            return False

    def _binlog_position(self, c: MariadbClient, timeout: float) -> None:
        try:
            rows = c.execute("SHOW MASTER STATUS", timeout, raw=True)
        except HookError as e:
            try:  # MySQL 8.4 renamed it
                rows = c.execute("SHOW BINARY LOG STATUS", timeout, raw=True)
            except HookError:  # the lock holds; only the position is missing: say so
                self.outcome.message += f"; binary log position unknown ({e})"
                return
        if rows:
            self.outcome.details.update(binlog_file=rows[0][0], binlog_position=int(rows[0][1]))
        try:
            (row,) = c.execute("SELECT 'ROW', @@gtid_binlog_pos", timeout)
            self.outcome.details["gtid_binlog_pos"] = row[0]
        except HookError:
            pass  # MySQL: no @@gtid_binlog_pos

    def thaw(self, timeout: float) -> None:
        o = self.outcome
        o.phase = "post-thaw"
        c = self.client
        if c is None:
            return
        try:
            c.execute("UNLOCK TABLES", timeout)
            o.message += "; unlocked"
            c.close()
        except HookError as e:
            o.fail(f"post-thaw failed: {e}")
            self._abort(timeout)
        finally:
            self._end()

    def expire(self) -> None:
        """The hold lasted too long: end the session (the server releases the lock)."""
        if self.client is not None and self.client.alive:
            self.outcome.fail("held past the hold timeout: the session was ended, the lock released")
            self._abort(10.0)

    def _abort(self, timeout: float) -> None:
        """Kill our client, and our connection on the server from a second session (a server still
        busy with our statement would otherwise notice the closed socket only when done)."""
        if self.client is not None:
            self.client.kill()
        if self.connection_id:
            killer = None
            try:
                killer = self._connect()
                killer.execute(f"KILL CONNECTION {int(self.connection_id)}", min(timeout, 10.0))
            except HookError:
                pass  # already gone: the usual case
            finally:
                if killer is not None:
                    killer.close()
            self.connection_id = None
        self._end()

    def _readiness(self, client: MariadbClient, facts: dict, timeout: float) -> tuple[dict, list[str], list[str], dict]:
        rows = client.execute("SELECT 'ROW', PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES "
                              "WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), "
                              "'''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')", timeout)
        held = {r[0].upper() for r in rows}
        binlog = bool(held & {"BINLOG MONITOR", "REPLICATION CLIENT", "SUPER"})
        privileges = {"reload": "RELOAD" in held, "binlog_monitor": binlog}
        problems = [] if privileges["reload"] else [f"{facts['user']} lacks RELOAD (FLUSH TABLES WITH READ LOCK)"]
        notes = (["the binary log position will not be recorded (needs BINLOG MONITOR)"]
                 if facts["log_bin"] and not binlog else [])
        return privileges, problems, notes, {"server_version": facts["version"], "log_bin": facts["log_bin"]}
