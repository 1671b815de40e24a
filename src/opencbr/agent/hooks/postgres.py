"""PostgreSQL: a non-exclusive base backup held across the snapshot.

Pre-freeze, in one ``psql`` session: ``CHECKPOINT`` (so the backup's own checkpoint is quick), then
``pg_backup_start(label, fast => true)``. The session stays open across the snapshot (its end aborts the
backup). Post-thaw: ``pg_backup_stop()`` returns the backup label (and tablespace map); then the WAL the
server wrote between the backup's start and its stop is read back (``pg_read_binary_file``). Both go in
the outcome's details. :func:`prepare_restored_postgres` writes them into a restored data directory, which
then starts by replaying from the backup's checkpoint up to the end-of-backup record, as a base backup
does: consistent even if the "snapshot" was a live copy that took minutes, not only an atomic one.
"""

from __future__ import annotations

import base64
import errno
import os
import pwd
import re
import stat
import zlib

from opencbr.system.beneath import PathSwapped, open_at

from .client import PsqlClient, psql_argv
from .database import DatabaseHook
from .outcome import HookError
from .plan import PostgresTarget

WAL_LIMIT = 64 * 1024 * 1024  # bytes of WAL kept for the restore; more means a hold far too long
WAL_READ = 4 * 1024 * 1024  # bytes per pg_read_binary_file call
# A standby's base backup ends where its pg_control, copied last, says; a snapshot cannot copy it last.
STANDBY = "a standby server (in recovery): quiesce its primary; its own snapshot is crash-consistent"


def _label_text(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9 _:.\-]", "_", label)[:100]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def parse_lsn(text: str) -> int:
    high, low = text.strip().split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def wal_file_name(timeline: int, segment: int, segment_size: int) -> str:
    per_id = 0x100000000 // segment_size
    return f"{timeline:08X}{segment // per_id:08X}{segment % per_id:08X}"


def wal_pieces(timeline: int, start: int, stop: int, segment_size: int) -> list[tuple[str, int, int]]:
    """(file name, offset, length) of the WAL bytes in [start, stop)."""
    pieces = []
    position = start
    while position < stop:
        segment, offset = divmod(position, segment_size)
        length = min(segment_size - offset, stop - position)
        pieces.append((wal_file_name(timeline, segment, segment_size), offset, length))
        position += length
    return pieces


class PostgresHook(DatabaseHook):
    kind = "postgresql"
    READY = "can be quiesced (pg_backup_start / pg_backup_stop)"

    def __init__(self, target: PostgresTarget, psql: str, label: str = "opencbr"):
        super().__init__(target)
        self.psql = psql
        self.label = _label_text(label)
        self.client: PsqlClient | None = None
        self.version = 0
        self.segment_size = 16 * 1024 * 1024

    def _connect(self) -> PsqlClient:
        t = self.target
        env = dict(os.environ, PGAPPNAME="opencbr-agent", PGCONNECT_TIMEOUT="10")
        if t.password_file:
            env["PGPASSFILE"] = t.password_file
        uid = gid = None
        if t.os_user is not None:
            try:
                entry = pwd.getpwuid(t.os_user) if isinstance(t.os_user, int) else pwd.getpwnam(t.os_user)
            except KeyError as e:
                raise HookError(f"no OS user {t.os_user!r} to run psql as") from e
            uid, gid = entry.pw_uid, entry.pw_gid
            env.update(HOME=entry.pw_dir, USER=entry.pw_name)
        argv = psql_argv(self.psql, host=t.host, port=t.port, user=t.user, dbname=t.dbname)
        return PsqlClient(argv, env=env, user=uid, group=gid, name=t.name)

    def _facts(self, client: PsqlClient, timeout: float) -> dict:
        (row,) = client.execute(
            "SELECT 'ROW', current_setting('server_version_num'), current_setting('wal_level'), "
            "(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), pg_backend_pid(), "
            "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), pg_is_in_recovery();", timeout)
        self.version = int(row[0])
        self.segment_size = int(row[2])
        return {"server_version": row[0], "wal_level": row[1], "pid": int(row[3]), "superuser": row[4] == "t",
                "standby": row[5] == "t"}

    # -- pre-freeze / post-thaw

    def freeze(self, timeout: float, hold_timeout: float) -> bool:
        o = self.outcome
        try:
            self.client = c = self._connect()
            facts = self._facts(c, timeout)
            o.details.update(server_version=facts["server_version"], data_dir=self.target.data_dir)
            if facts["standby"]:
                raise HookError(STANDBY)
            c.execute(f"SET statement_timeout = {_ms(timeout)}; SET lock_timeout = {_ms(timeout)};", timeout)
            if self.version >= 140000:  # the server ends the session itself if the agent goes quiet
                c.execute(f"SET idle_session_timeout = {_ms(hold_timeout + timeout)};", timeout)
            if facts["superuser"] or self._may_checkpoint(c, timeout):
                c.execute("CHECKPOINT;", timeout)
            start = "pg_backup_start" if self.version >= 150000 else "pg_start_backup"
            extra = "" if self.version >= 150000 else ", false"
            (row,) = c.execute(f"SELECT 'ROW', {start}('{self.label}', true{extra});", timeout)
            o.details["start_lsn"] = row[0]
            o.ok, o.message = True, f"in backup mode since WAL {row[0]}"
            return True
        except HookError as e:
            o.fail(f"pre-freeze failed: {e}")
            self._end()
            return False

    def _may_checkpoint(self, c: PsqlClient, timeout: float) -> bool:
        if self.version < 150000:
            return False
        (row,) = c.execute("SELECT 'ROW', pg_has_role('pg_checkpoint', 'MEMBER');", timeout)
        return row[0] == "t"

    def thaw(self, timeout: float) -> None:
        o = self.outcome
        o.phase = "post-thaw"
        c = self.client
        if c is None:
            return
        try:
            stop = "pg_backup_stop(false)" if self.version >= 150000 else "pg_stop_backup(false, false)"
            (row,) = c.execute(
                "SELECT 'ROW', lsn, encode(convert_to(labelfile, 'UTF8'), 'hex'), "
                f"encode(convert_to(coalesce(spcmapfile, ''), 'UTF8'), 'hex') FROM {stop};", timeout)
            label = bytes.fromhex(row[1]).decode()
            o.details.update(stop_lsn=row[0], backup_label=label, tablespace_map=bytes.fromhex(row[2]).decode())
            self._keep_wal(c, label, parse_lsn(row[0]), timeout)
            o.ok = True
            o.message = (f"base backup from WAL {o.details['start_lsn']} to {row[0]}; "
                         "restore with prepare_restored_postgres")
        except HookError as e:
            o.fail(f"post-thaw failed: {e} (the backup mode ended with the session; no backup label)")
        finally:
            self._end()

    def _keep_wal(self, c: PsqlClient, label: str, stop: int, timeout: float) -> None:
        """Read back the WAL from the backup's start to its end record: the snapshot cannot hold the
        end record (it is written after), and a restore cannot finish the backup's recovery without it."""
        start_line = re.search(r"START WAL LOCATION: (\S+)", label)
        timeline_line = re.search(r"START TIMELINE: (\d+)", label)
        if not start_line or not timeline_line:
            raise HookError("the backup label has no start location or timeline")
        start, timeline = parse_lsn(start_line.group(1)), int(timeline_line.group(1))
        if stop - start > WAL_LIMIT:
            raise HookError(f"{stop - start} bytes of WAL during the hold (limit {WAL_LIMIT}): hold shorter")
        pieces = []
        for name, offset, length in wal_pieces(timeline, start, stop, self.segment_size):
            data = b""
            while len(data) < length:
                n = min(WAL_READ, length - len(data))
                (row,) = c.execute(f"SELECT 'ROW', encode(pg_read_binary_file('pg_wal/{name}', "
                                   f"{offset + len(data)}, {n}), 'hex');", timeout)
                chunk = bytes.fromhex(row[0])
                if len(chunk) != n:
                    raise HookError(f"pg_wal/{name}: read {len(chunk)} bytes of {n}")
                data += chunk
            pieces.append({"file": name, "offset": offset, "length": length,
                           "zlib_base64": base64.b64encode(zlib.compress(data, 6)).decode()})
        self.outcome.details.update(timeline=timeline, wal_segment_size=self.segment_size, wal=pieces,
                                    start_wal_file=pieces[0]["file"] if pieces else None)

    def expire(self) -> None:
        """The hold lasted too long: end the session (the server aborts the backup mode)."""
        if self.client is not None and self.client.alive:
            self.client.kill()
            self.outcome.fail("held past the hold timeout: the session was ended, the backup mode aborted")
            self._end()

    # -- readiness

    def _readiness(self, client: PsqlClient, facts: dict, timeout: float) -> tuple[dict, list[str], list[str], dict]:
        if self.version >= 150000:
            fns = ("pg_backup_start(text,boolean)", "pg_backup_stop(boolean)")
            checkpoint = "pg_has_role('pg_checkpoint', 'MEMBER')"
        else:
            fns = ("pg_start_backup(text,boolean,boolean)", "pg_stop_backup(boolean,boolean)")
            checkpoint = "false"
        (row,) = client.execute(
            f"SELECT 'ROW', has_function_privilege('{fns[0]}', 'EXECUTE'), "
            f"has_function_privilege('{fns[1]}', 'EXECUTE'), {checkpoint}, "
            "has_function_privilege('pg_read_binary_file(text,bigint,bigint)', 'EXECUTE');", timeout)
        privileges = {"superuser": facts["superuser"], "backup_start": row[0] == "t",
                      "backup_stop": row[1] == "t", "checkpoint": facts["superuser"] or row[2] == "t",
                      "read_wal": row[3] == "t"}
        missing = [k for k in ("backup_start", "backup_stop", "read_wal") if not privileges[k]]
        problems = [f"missing EXECUTE on {', '.join(missing)}"] if missing else []
        if facts["standby"]:
            problems.append(STANDBY)
        if facts["wal_level"] not in ("replica", "logical"):
            problems.append(f"wal_level is {facts['wal_level']} (an online backup needs replica)")
        return privileges, problems, [], {"server_version": facts["server_version"]}


def prepare_restored_postgres(data_dir: str, details: dict) -> list[str]:
    """Make a data directory restored from an app-consistent backup start as a base backup: write
    ``backup_label`` (and ``tablespace_map``), put back the WAL written until the end of the backup,
    remove the copied ``postmaster.pid``. Files get the data directory's owner and mode 0600. Returns
    what it did. Without a label in ``details`` (a crash-consistent backup) only the pid file goes.
    ``data_dir``: a path the operator gives (``python -m opencbr.agent.hooks prepare-postgres``)."""
    dfd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _prepare_data_dir(dfd, details)
    finally:
        os.close(dfd)


_NEW = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _prepare_data_dir(dfd: int, details: dict) -> list[str]:
    """:func:`prepare_restored_postgres` in the directory open on ``dfd``. What it writes is restored
    data, which whoever wrote the backed-up tree (or can write in the restore's target) controls, and the
    agent runs as root: every name is opened in its directory by descriptor, no symlink is followed
    (a ``backup_label`` planted as a link to /etc/shadow, a ``pg_wal`` that is a link -- as ``initdb
    --waldir`` makes it, to the original server's live WAL -- get nothing written through them)."""
    st = os.fstat(dfd)
    done = []

    def write(at: int, name: str, data: bytes, offset: int = 0, size: int | None = None) -> None:
        fd = _open_regular(at, name)
        try:
            fst = os.fstat(fd)
            if size is not None and fst.st_size < size:
                os.ftruncate(fd, size)
            os.pwrite(fd, data, offset)
            os.fsync(fd)
            os.fchown(fd, st.st_uid, st.st_gid)
        finally:
            os.close(fd)

    try:
        os.unlink("postmaster.pid", dir_fd=dfd)
        done.append("removed postmaster.pid")
    except FileNotFoundError:
        pass
    label = details.get("backup_label")
    if not label:
        return done
    for name, text in (("backup_label", label), ("tablespace_map", details.get("tablespace_map"))):
        if not text:
            continue
        try:
            os.unlink(name, dir_fd=dfd)  # (a file or a link of that name, itself: unlink follows nothing)
        except FileNotFoundError:
            pass
        write(dfd, name, text.encode())
        done.append(f"wrote {name}")
    if not details.get("wal"):
        return done
    try:
        wal = os.open("pg_wal", _DIR, dir_fd=dfd)
    except OSError as e:
        link = _link_target(dfd, "pg_wal")
        return done + [f"WAL not written: pg_wal is {'a symbolic link to ' + link if link else e.strerror} "
                       "(the restore writes nothing through a link); copy the backup's WAL in by hand"]
    try:
        left = WAL_LIMIT
        for piece in details["wal"]:
            data = _inflated(piece, left)
            left -= len(data)
            if "/" in piece["file"] or piece["file"] in ("", ".", ".."):
                raise OSError(errno.EINVAL, f"not a WAL file name: {piece['file']!r}")
            write(wal, piece["file"], data, piece["offset"], details["wal_segment_size"])
            done.append(f"wrote {len(data)} bytes of WAL into pg_wal/{piece['file']} at {piece['offset']}")
    finally:
        os.close(wal)
    return done


def _inflated(piece: dict, limit: int) -> bytes:
    """A WAL piece of the record, inflated to its stated ``length`` and no further (``limit`` bytes at most
    in all: ``WAL_LIMIT``, what a backup keeps). The record comes with the backup, and a piece that
    inflated without bound (a few KB of zlib make gigabytes) filled the root agent's memory."""
    length = piece.get("length")
    if type(length) is not int or not 0 <= length <= limit:
        raise OSError(errno.EINVAL, f"a WAL piece of {length!r} bytes (at most {limit} left of the backup's WAL)")
    inflate = zlib.decompressobj()
    try:
        data = inflate.decompress(base64.b64decode(piece["zlib_base64"]), length + 1)
    except (zlib.error, ValueError) as e:
        raise OSError(errno.EINVAL, f"a WAL piece that is not zlib data: {e}") from None
    if len(data) != length or inflate.unconsumed_tail:
        raise OSError(errno.EINVAL, f"a WAL piece that does not inflate to its stated {length} bytes")
    return data


def _open_regular(at: int, name: str) -> int:
    """``name`` in directory ``at`` for writing: made anew (``O_EXCL``), or, if there, opened only when it
    is a regular file -- looked at through an ``O_PATH`` descriptor and reopened through it, so a device
    node or a fifo in the restored tree (its owner's data) is never opened: its driver would act on the
    open, and a fifo would hang it."""
    try:
        return os.open(name, _NEW | os.O_EXCL, 0o600, dir_fd=at)
    except FileExistsError:
        pass
    seen = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=at)
    try:
        if not stat.S_ISREG(os.fstat(seen).st_mode):
            raise OSError(errno.EINVAL, f"{name} is not a regular file: left alone")
        return os.open(f"/proc/self/fd/{seen}", os.O_WRONLY | os.O_CLOEXEC)
    finally:
        os.close(seen)


def _link_target(dfd: int, name: str) -> str | None:
    try:
        return os.readlink(name, dir_fd=dfd)
    except OSError:
        return None


def prepare_restored_tree(record: dict, source_path: str, target_path: str, target_fd: int | None = None) -> list[str]:
    """After a directory ``source_path`` of the protected host was restored to ``target_path`` (open on
    ``target_fd`` where the caller has it): ready every PostgreSQL data directory of the backup's hook
    ``record`` (``Quiesce.record(restore_material=True)``) that lay inside it (:func:`_prepare_data_dir`),
    each reached below the target with no symlink followed. Returns what it did, per data directory."""
    source = os.path.realpath(source_path).rstrip("/") + "/"
    done = []
    top = os.dup(target_fd) if target_fd is not None else os.open(target_path, _DIR & ~os.O_NOFOLLOW)
    try:
        for hook in record.get("hooks", []):
            details = hook.get("details") or {}
            data_dir = details.get("data_dir")
            if hook.get("kind") != "postgresql" or not details.get("backup_label") or not data_dir:
                continue
            data_dir = os.path.realpath(data_dir).rstrip("/") + "/"
            if not data_dir.startswith(source) and data_dir != source:
                continue
            rel = data_dir[len(source):].rstrip("/")
            restored = os.path.join(target_path, rel).rstrip("/")
            try:
                dfd = open_at(top, rel, _DIR) if rel else os.dup(top)
            except FileNotFoundError:
                continue
            except (OSError, PathSwapped) as e:
                done.append(f"{restored}: not prepared: {e}")
                continue
            try:
                done += [f"{restored}: {line}" for line in _prepare_data_dir(dfd, details)]
            except OSError as e:  # (the data is restored: said, not a failed restore)
                done.append(f"{restored}: not prepared: {e}")
            finally:
                os.close(dfd)
    finally:
        os.close(top)
    return done
