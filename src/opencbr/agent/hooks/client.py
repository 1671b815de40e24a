"""A database's own command-line client (``psql``, ``mariadb``) in a child process, fed statements
through a pipe from the agent.

Why a child process and a pipe rather than a driver in the agent: the session that holds a backup
mode or a global read lock must end when the agent does. If the agent (or its task) dies, the kernel
closes the pipe, the idle client reads end-of-file and exits, its connection closes, and the server
ends the backup mode / releases the lock by itself. No cleanup code has to survive the crash.

Every statement is followed by a marker the client echoes back, so the agent knows when the
statement finished and whether it failed; a statement that does not finish within its timeout gets
the client killed (which, again, releases the database).
"""

from __future__ import annotations

import os
import secrets
import select
import subprocess
import time

from .outcome import HookError, bounded

ROW = "ROW"  # queries select this constant first: lines starting with it are rows, the rest messages


class SqlClient:
    """One client process holding one database session."""

    sep = "\t"

    def __init__(self, argv: list[str], *, env: dict | None = None, user: int | None = None,
                 group: int | None = None, name: str = "client"):
        self.name = name
        self.marker = "__opencbr_" + secrets.token_hex(8)
        self.transcript = ""
        self._buffer = b""
        kwargs = {}
        if user is not None and user != os.geteuid():
            kwargs = {"user": user, "group": group, "extra_groups": []}
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                         close_fds=True, **kwargs)
        except OSError as e:
            raise HookError(f"cannot start {argv[0]}: {e}") from e

    # -- the dialect: how a statement is followed by the marker, and how a failure shows
    def _framed(self, sql: str) -> str:
        raise NotImplementedError

    def _failed(self, status: str, messages: list[str]) -> bool:
        raise NotImplementedError

    def execute(self, sql: str, timeout: float, *, raw: bool = False) -> list[list[str]]:
        """Run ``sql`` (one or more statements); the rows of the queries that select ``'ROW', ...``
        (``raw``: every line of output, for statements such as ``SHOW`` that cannot select it).
        Raises :class:`HookError` on an SQL error, a dead client, or no answer within ``timeout``
        seconds (the client is then killed: its session ends)."""
        self._note(f"> {sql.strip()}\n")
        try:
            self.proc.stdin.write(self._framed(sql).encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as e:
            self._drain(time.monotonic() + 2.0)  # why it exited (e.g. "Can't connect") is in its output
            self.kill()
            raise HookError(f"{self.name}: the client is gone ({e}); {self._last_words()}") from e
        lines, status = self._read_until_marker(time.monotonic() + timeout, timeout)
        is_row = (lambda line: True) if raw else (lambda line: line.startswith(ROW + self.sep) or line == ROW)
        rows = [line.split(self.sep)[0 if raw else 1:] for line in lines if is_row(line)]
        messages = [line for line in lines if not is_row(line)]
        if messages:
            self._note("".join(m + "\n" for m in messages))
        if self._failed(status, lines if raw else messages):
            raise HookError(f"{self.name}: " + ("; ".join(m for m in messages if m.strip()) or "failed"))
        return rows

    def _read_until_marker(self, deadline: float, timeout: float) -> tuple[list[str], str]:
        fd = self.proc.stdout.fileno()
        while True:
            head, found, rest = self._buffer.partition(self.marker.encode())
            if found and b"\n" in rest:
                status, _, self._buffer = rest.partition(b"\n")
                text = head.decode(errors="replace")
                return [line for line in text.split("\n") if line.strip()], status.decode().strip()
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise HookError(f"{self.name}: no answer within {timeout:g} s; the session was ended")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    self.kill()
                    raise HookError(f"{self.name}: the client exited: {self._last_words()}")
                self._buffer += data

    def _drain(self, deadline: float) -> None:
        """Read what a client that stopped reading its input still wrote, until it closes its output."""
        try:
            fd = self.proc.stdout.fileno()
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([fd], [], [], left)
                data = os.read(fd, 65536) if ready else b""
                if not data:
                    return
                self._buffer += data
        except (ValueError, OSError):
            return  # its output is closed already: what was read is all there is

    def _last_words(self) -> str:
        text = self._buffer.decode(errors="replace").strip()
        self._note(text + "\n" if text else "")
        return text[-2000:] or f"exit status {self.proc.poll()}"

    def _note(self, text: str) -> None:
        self.transcript = bounded(self.transcript + text)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """End the client at once (its connection closes: the server releases what it held)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self._reap()

    def close(self, timeout: float = 5.0) -> None:
        """End the session politely (end-of-file on the client's input), or kill it."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class PsqlClient(SqlClient):
    """``psql`` reading statements from its standard input; ``\\echo`` with ``:ERROR`` is the marker."""

    sep = "\x1f"

    def _framed(self, sql: str) -> str:
        return f"{sql.rstrip()}\n\\echo {self.marker} :ERROR\n"

    def _failed(self, status: str, messages: list[str]) -> bool:
        return status != "false"


def psql_argv(psql: str, *, host: str, port: int, user: str | None, dbname: str) -> list[str]:
    argv = [psql, "-X", "-q", "-A", "-t", "-F", PsqlClient.sep, "-v", "ON_ERROR_STOP=0",
            "-v", "VERBOSITY=terse", "-h", host, "-p", str(port), "-d", dbname]
    return argv + (["-U", user] if user else [])


class MariadbClient(SqlClient):
    """``mariadb`` / ``mysql`` in batch mode (``--force``: an error does not end the session);
    a ``SELECT`` of the marker follows each statement."""

    def _framed(self, sql: str) -> str:
        sql = sql.strip()
        return f"{sql}{'' if sql.endswith(';') else ';'}\nSELECT '{self.marker}';\n"

    def _failed(self, status: str, messages: list[str]) -> bool:
        return any(m.startswith("ERROR ") for m in messages)


def mariadb_argv(client: str, *, socket: str | None, host: str | None, port: int | None,
                 user: str | None, defaults_file: str | None) -> list[str]:
    argv = [client] + ([f"--defaults-extra-file={defaults_file}"] if defaults_file else ["--no-defaults"])
    argv += ["--batch", "--skip-column-names", "--unbuffered", "--force", "--connect-timeout=10"]
    if socket:
        argv += [f"--socket={socket}", "--protocol=socket"]
    else:
        argv += [f"--host={host or '127.0.0.1'}", f"--port={port or 3306}", "--protocol=tcp"]
    return argv + ([f"--user={user}"] if user else [])
