"""An incremental backup's walk with the C listing takes a directory's non-directories in runs
(``walker.WalkRun``) and decides in C which the parent's records still describe (``_listing.reuse``);
without the extension every entry goes the Python way. Both must write the same catalog, byte for byte,
whatever changed between the backups."""

from __future__ import annotations

import os
import shutil
import stat
import threading

import pytest

from opencbr.engine.tree import backup_tree, walker
from opencbr.engine.tree.catalog import CatalogReader
from opencbr.engine.tree.common import chunkstore_of, load_index
from opencbr.engine.tree.walker import TreeWalker, WalkRun
from tests.support.engine_tree import SMALL_CHUNKS, build_tree

needs_native = pytest.mark.skipif(walker.native_listing() is None, reason="the C listing is not built here")


def _catalog(repo, backup_id: str) -> tuple[list[bytes], list[bytes]]:
    """The backup's catalog: its records and its catalog chunks' digests."""
    cs = chunkstore_of(repo)
    dix = load_index(cs, backup_id)
    return [bytes(r) for r in CatalogReader(cs, dix).records()], [c.digest for c in dix.catalog]


def _change(src) -> None:
    """What happens to a tree between two backups: contents, names, types, links, xattrs, access times."""
    (src / "docs" / "text.md").write_bytes(b"new content\n" * 100)  # changed (size, mtime, ctime)
    for i in range(0, 40, 7):  # some of a directory's many unchanged files changed
        p = src / "many" / f"f{i:03d}.txt"
        p.write_bytes(p.read_bytes() + b"appended\n")
    for i in range(40, 45):
        (src / "many" / f"f{i:03d}.txt").write_bytes(b"new %d\n" % i)  # new, at the end of a run
    (src / "many" / "a-new-first.txt").write_bytes(b"new, first of its run\n")
    os.unlink(src / "many" / "f003.txt")  # removed from the middle of a run
    os.unlink(src / "bin" / "ro.dat")
    os.setxattr(src / "small.txt", "user.comment", b"another comment")  # only ctime tells
    with open(src / "many" / "f010.txt", "rb") as f:  # only the access time moves (read)
        f.read()
    os.link(src / "links" / "orig.txt", src / "links" / "fourth.txt")  # nlink and ctime of the group
    os.unlink(src / "rel-link")
    os.symlink("bin/random.bin", src / "rel-link")  # a symlink replaced
    shutil.rmtree(src / "deep" / "a" / "b")
    (src / "deep" / "a" / "b").write_bytes(b"a directory replaced by a file\n")
    os.unlink(src / "empty.txt")
    os.mkdir(src / "empty.txt")  # a file replaced by a directory
    (src / "empty.txt" / "inside").write_bytes(b"x")
    (src / os.fsdecode(b"\xff\xfe-not-utf8")).write_bytes(b"a new name that is not UTF-8\n")
    os.chmod(src / os.fsdecode(b"caf\xe9-latin1.txt"), 0o600)
    os.mkfifo(src / "many" / "zz-fifo")


@needs_native
@pytest.mark.parametrize("run_max", [2, 256])
def test_the_c_runs_and_the_python_walk_write_the_same_catalog(enc_repo, tmp_path, monkeypatch, run_max):
    src = build_tree(tmp_path / "src")
    backup_tree(enc_repo, src, backup_id="b1", meta={}, params=SMALL_CHUNKS)
    _change(src)
    monkeypatch.setattr(TreeWalker, "RUN_MAX", run_max)
    runs = [it for it in TreeWalker(src, lambda *a: None, prefetch=0, runs=True) if it.__class__ is WalkRun]
    assert runs and max(r.count for r in runs) == min(run_max, 46)  # (the C path is taken; 46: many/)
    in_c = backup_tree(enc_repo, src, backup_id="c", meta={}, parent_backup_id="b1", params=SMALL_CHUNKS)
    monkeypatch.setattr(walker, "_native_listing", None)
    in_python = backup_tree(enc_repo, src, backup_id="py", meta={}, parent_backup_id="b1", params=SMALL_CHUNKS)
    records, digests = _catalog(enc_repo, "c")
    assert (records, digests) == _catalog(enc_repo, "py")
    refs = chunkstore_of(enc_repo).manifest_refs
    assert refs("c") == refs("py")  # (the chunks each backup keeps from garbage collection)
    assert len(records) == in_c.files + in_c.dirs + in_c.symlinks + in_c.specials
    for field in ("files", "dirs", "symlinks", "specials", "total_bytes", "bytes_read", "reused_files", "partial",
                  "catalog_bytes"):
        assert getattr(in_c, field) == getattr(in_python, field), field
    assert [w.to_dict() for w in in_c.warnings] == [w.to_dict() for w in in_python.warnings]
    assert 0 < in_c.reused_files < in_c.files


@needs_native
@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_run_holds_a_directorys_non_directories_in_order(tmp_path, monkeypatch, prefetch):
    """Directories break runs (the walk enters them in order, listed ahead or not); a run never exceeds
    RUN_MAX entries."""
    src = build_tree(tmp_path / "src")
    monkeypatch.setattr(TreeWalker, "RUN_MAX", 16)
    monkeypatch.setattr(TreeWalker, "MAX_PREFETCH_ENTRIES", 40)  # (the gate counts a run's entries)
    plain = [it.path for it in TreeWalker(src, lambda *a: None, prefetch=0)]
    walked = []
    for it in TreeWalker(src, lambda *a: None, prefetch=prefetch, runs=True):
        if it.__class__ is WalkRun:
            prefix, _apfx, names, _stats, count = it.listing
            assert 0 < count <= 16
            walked += [prefix + n for n in names.split(b"\0")[:-1]]
        else:
            assert it.path == b"" or stat.S_ISDIR(it.st.st_mode)
            walked.append(it.path)
    assert walked == plain



@needs_native
def test_a_re_backup_asks_the_index_once_per_chunk_its_unchanged_files_share(enc_repo, tmp_path, monkeypatch):
    """Unchanged files that name the same chunks, not one after the other (two contents alternating), are
    reused after one index look-up per chunk, not one per file; a chunk gone from the vault is still noticed."""
    from opencbr.engine.chunks.session import WriteSession

    src = tmp_path / "src"
    src.mkdir()
    contents = [os.urandom(80 << 10), os.urandom(80 << 10)]  # (over the small-file limit: a chunk of their own)
    for i in range(40):
        (src / f"f{i:03d}").write_bytes(contents[i % 2])
    backup_tree(enc_repo, src, backup_id="b1", meta={})
    asked: list[bytes] = []
    knows = WriteSession.knows
    monkeypatch.setattr(WriteSession, "knows", lambda self, d: asked.append(d) or knows(self, d))
    again = backup_tree(enc_repo, src, backup_id="b2", meta={}, parent_backup_id="b1")
    assert again.reused_files == 40 and again.bytes_read == 0
    assert len(asked) == len(set(asked)) and 2 <= len(asked) <= 4  # (each content: one chunk, or two CDC cuts)
    asked.clear()
    monkeypatch.setattr(WriteSession, "knows", lambda self, d: asked.append(d) or d not in asked[:1])
    third = backup_tree(enc_repo, src, backup_id="b3", meta={}, parent_backup_id="b2")
    assert third.reused_files < 40 and third.bytes_read > 0  # (the first chunk "gone": its files read again)


def test_a_backup_walks_with_fewer_collections_and_gives_the_threshold_back(enc_repo, tmp_path, monkeypatch):
    """The walk runs with the collector's raised young threshold (engine/tree/memory.py); the one before is
    back when the backup ends, whether it succeeded or not."""
    import gc

    from opencbr.engine.tree import memory
    from opencbr.engine.tree.sources import DirectorySource

    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(b"x" * i)
    before = gc.get_threshold()
    seen: list[int] = []
    walk = DirectorySource.walk

    def watched(self, warn, incremental):
        for item in walk(self, warn, incremental):
            seen.append(gc.get_threshold()[0])
            yield item

    monkeypatch.setattr(DirectorySource, "walk", watched)
    backup_tree(enc_repo, src, backup_id="b1", meta={})
    assert seen and set(seen) == {max(memory.WALK_GEN0_THRESHOLD, before[0])}
    assert gc.get_threshold() == before
    monkeypatch.setattr(DirectorySource, "walk", lambda self, warn, inc: _failing_walk())
    with pytest.raises(RuntimeError, match="walk failed"):
        backup_tree(enc_repo, src, backup_id="b2", meta={})
    assert gc.get_threshold() == before


def _failing_walk():
    raise RuntimeError("walk failed")
    yield  # (a generator)


def test_bundles_and_catalog_chunks_are_stored_by_threads_of_their_own(enc_repo, tmp_path, monkeypatch):
    """Storing a bundle or a catalog chunk is what the walking thread waits for when too many are in flight;
    on the readers' threads those waited behind batches of small files to read (the walk with them)."""
    from opencbr.engine.tree import backup as tree_backup

    seen: dict[str, set[str]] = {"read": set(), "bundle": set(), "catalog": set()}

    def on_thread(kind, fn):
        def call(self, *args):
            import threading

            seen[kind].add(threading.current_thread().name.rsplit("_", 1)[0])
            return fn(self, *args)
        return call

    for kind, name in (("read", "_read_batch"), ("bundle", "_store_bundle"), ("catalog", "_put_catalog")):
        monkeypatch.setattr(tree_backup.TreeBackup, name, on_thread(kind, getattr(tree_backup.TreeBackup, name)))
    src = tmp_path / "src"
    for i in range(600):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"file-with-a-long-name-{i:05d}.txt").write_bytes(b"%d\n" % i * (i % 50 + 1))
    backup_tree(enc_repo, src, backup_id="b1", meta={})
    assert seen == {"read": {"tree-read"}, "bundle": {"tree-store"}, "catalog": {"tree-store"}}


@pytest.mark.parametrize("reader", ["native", "python"])
def test_a_file_saved_anew_under_its_name_while_the_backup_runs_is_kept(repo, tmp_path, monkeypatch, reader):
    """Editors, package managers and most programs save a file by writing a new one and renaming it over
    the old. Renamed over between the walk's lstat and the read, the file was left out of the backup
    ("replaced by another file", as if it had vanished), though a complete file had that name all along:
    a restore lacked it. Now the regular file there when it is read is stored, with its own stat; a
    hard-linked one (whose group is keyed by the walk's inode), or something else there now, still is not."""
    from opencbr.engine.tree import restore_tree, sources
    from opencbr.engine.tree.backup import backup_tree_from
    from opencbr.engine.tree.chunker import REPLACED

    if reader == "python":
        monkeypatch.setattr(sources, "_native_reading", None)
    elif sources._native_reading is None:
        pytest.skip("the C reader is not built")
    src = tmp_path / "src"
    src.mkdir()
    new = {"small.cfg": b"new small " * 10, "big.cfg": b"new big " * 100_000}
    for name in new:
        (src / name).write_bytes(b"old")
    (src / "linked").write_bytes(b"old linked")
    os.link(src / "linked", src / "linked2")
    (src / "keep.txt").write_bytes(b"keep")
    saved, lock = [], threading.Lock()

    class Saving(sources.DirectorySource):
        def _save_all(self):
            with lock:  # once, after the walk listed the old files, before the first read
                if saved:
                    return
                for name, data in {**new, "linked": b"new linked"}.items():
                    (src / (name + ".tmp")).write_bytes(data)
                    os.chmod(src / (name + ".tmp"), 0o640)
                    os.rename(src / (name + ".tmp"), src / name)
                saved.append(True)

        def read_small(self, chunker, items, small_limit):
            self._save_all()
            return super().read_small(chunker, items, small_limit)

        def read_file(self, chunker, item, small_limit):
            self._save_all()
            return super().read_file(chunker, item, small_limit)

    r = backup_tree_from(repo, Saving(os.fsencode(src)), backup_id="b1", meta={})
    assert saved and not r.partial
    said = {w.path: w.message for w in r.warnings}
    assert said["/linked"] == REPLACED, said
    assert said["/small.cfg"] == said["/big.cfg"] != REPLACED and said["/big.cfg"].startswith(REPLACED), said
    out = tmp_path / "out"
    restore_tree(repo, "b1", out)
    for name, data in new.items():
        assert (out / name).read_bytes() == data
        st, got = os.stat(src / name), os.stat(out / name)
        assert (got.st_mode, got.st_mtime_ns, got.st_size) == (st.st_mode, st.st_mtime_ns, st.st_size)
    assert not (out / "linked").exists() and not (out / "linked2").exists()  # (its group was read as one)
    assert (out / "keep.txt").read_bytes() == b"keep"
    # the next backup finds the files as recorded: not read again
    r2 = backup_tree_from(repo, sources.DirectorySource(os.fsencode(src)), backup_id="b2", meta={},
                          parent_backup_id="b1")
    assert r2.warnings == [] and r2.bytes_read == len(b"new linked") + len(b"old linked")  # (those left out)
