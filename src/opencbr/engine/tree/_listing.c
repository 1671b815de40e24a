/* A directory's listing in one call, without the GIL (optional: walker.py falls back to os.scandir).
 *
 * The walking thread of a tree backup lists every directory. In Python a listing is ~10 system calls per
 * directory plus one lstat per entry, and each call gives up the GIL and waits to get it back behind the
 * backup's reader and catalog threads (50-70 us a hand-off instead of ~4 us: bench/README.md, realtree).
 * list_dir() makes all of a directory's system calls with the GIL released -- open, fstat, getdents64,
 * one fstatat per entry, the optional readahead of small files -- and then builds the entries with it:
 * one hand-off per directory.
 *
 * For an incremental backup, list_dir can keep a directory's non-directories as packed runs, and reuse()
 * compares them with the parent's records (backup.py's _same_file / _same_node, in C) so that the unchanged
 * ones -- most of a re-backup -- never become Python objects but their pending-queue tuples; keyed_records()
 * reads the parent's catalog chunks for it.
 *
 * For an incremental backup too, an Ahead lists the tree on threads of its own ahead of the walk, and list_dir
 * takes a directory's listing from it (see the comment above struct Ahead).
 *
 * The safety is walker.py's: the directory is opened by its path with O_NOFOLLOW (the root: may be a
 * /proc/self/fd link, followed) and O_DIRECTORY, and it is listed only if its (st_dev, st_ino) are the ones
 * its parent's listing saw; every entry is then stat'ed, and read ahead, relative to that descriptor
 * (fstatat, openat with O_NOFOLLOW): nothing outside the directory checked is ever touched.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zlib.h>
#include "opening.h"

/* walker.py checks this: a .so left from another version of this file is not used (the fallback is). */
#define LISTING_ABI 8

/* What list_dir returns first. */
enum { LIST_OK = 0, LIST_OPEN_FAILED = 1, LIST_OTHER_DIRECTORY = 2, LIST_FAILED = 3 };

static PyTypeObject *stat_result_type; /* os.stat_result */

/* Entries read from a directory, before any Python object exists (filled with the GIL released). */
typedef struct {
    char *names;       /* NUL-terminated names, one after the other */
    size_t names_len, names_cap;
    size_t *offsets;   /* into names, sorted by name once listed */
    struct stat *st;   /* st[i]: entry i's lstat (in sorted order), valid if err[i] == 0 */
    int *err;          /* 0, or the errno of its fstatat; -1: excluded (not stat'ed, not returned) */
    size_t n, cap;
} Listing;

static void listing_free(Listing *l) {
    free(l->names);
    free(l->offsets);
    free(l->st);
    free(l->err);
}

static int listing_add(Listing *l, const char *name, size_t len) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        size_t *o = realloc(l->offsets, cap * sizeof *o);
        if (!o)
            return -1;
        l->offsets = o;
        l->cap = cap;
    }
    if (l->names_len + len + 1 > l->names_cap) {
        size_t cap = l->names_cap ? l->names_cap * 2 : 4096;
        while (cap < l->names_len + len + 1)
            cap *= 2;
        char *p = realloc(l->names, cap);
        if (!p)
            return -1;
        l->names = p;
        l->names_cap = cap;
    }
    memcpy(l->names + l->names_len, name, len + 1);
    l->offsets[l->n++] = l->names_len;
    l->names_len += len + 1;
    return 0;
}

/* Byte order of the names, which is Python's order of the same names as bytes (they hold no NUL). */
static int by_name(const void *a, const void *b, void *names) {
    return strcmp((const char *)names + *(const size_t *)a, (const char *)names + *(const size_t *)b);
}

/* getdents64 until the end; '.' and '..' left out. Returns 0 or an errno. */
static int read_names(int fd, Listing *l) {
    char buf[32768] __attribute__((aligned(8)));
    for (;;) {
        ssize_t got = getdents64(fd, buf, sizeof buf);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (got == 0)
            return 0;
        for (ssize_t pos = 0; pos < got;) {
            struct dirent64 *d = (struct dirent64 *)(buf + pos);
            pos += d->d_reclen;
            const char *nm = d->d_name;
            if (nm[0] == '.' && (nm[1] == 0 || (nm[1] == '.' && nm[2] == 0)))
                continue;
            if (listing_add(l, nm, strlen(nm)) < 0)
                return ENOMEM;
        }
    }
}

static int is_excluded(const char *name, const char *const *excluded, Py_ssize_t n_excluded) {
    for (Py_ssize_t i = 0; i < n_excluded; i++)
        if (strcmp(name, excluded[i]) == 0)
            return 1;
    return 0;
}

/* Ask the kernel to start reading a small regular file (as walker.py's _readahead did by path). */
static void read_ahead(int dirfd, const char *name, off_t size) {
    int fd;
    do
        fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOATIME);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return; /* e.g. not ours (O_NOATIME) or unreadable: the real read will say so */
    posix_fadvise(fd, 0, size, POSIX_FADV_WILLNEED);
    close(fd);
}

/* The GIL-free part: stat (and read ahead) every entry of the open directory, in name order. */
static void stat_entries(int fd, Listing *l, const char *const *excluded, Py_ssize_t n_excluded,
                         long long readahead_below) {
    for (size_t i = 0; i < l->n; i++) {
        const char *name = l->names + l->offsets[i];
        if (n_excluded && is_excluded(name, excluded, n_excluded)) {
            l->err[i] = -1;
            continue;
        }
        int r;
        do
            r = fstatat(fd, name, &l->st[i], AT_SYMLINK_NOFOLLOW);
        while (r < 0 && errno == EINTR);
        l->err[i] = r < 0 ? errno : 0;
        if (r == 0 && readahead_below > 0 && S_ISREG(l->st[i].st_mode) && l->st[i].st_size > 0 &&
            l->st[i].st_size < readahead_below)
            read_ahead(fd, name, l->st[i].st_size);
    }
}

/* Open, check and list a directory, then stat its entries. Returns LIST_* and sets *error. */
static int list_nogil(const char *path, int follow, int rootfd, const char *rel, int check, dev_t want_dev,
                      ino_t want_ino, const char *const *excluded, Py_ssize_t n_excluded,
                      long long readahead_below, Listing *l, int *error) {
    /* below the root (rootfd >= 0, not the root itself): no symlink followed on the way (opening.h) */
    int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    int fd = rootfd >= 0 && !follow ? open_beneath(rootfd, rel, flags)
                                    : step_into(AT_FDCWD, AT_FDCWD, path, flags | (follow ? 0 : O_NOFOLLOW));
    if (fd < 0) {
        *error = errno;
        return LIST_OPEN_FAILED;
    }
    int status = LIST_OK;
    struct stat dst;
    if (fstat(fd, &dst) < 0) {
        *error = errno;
        status = LIST_FAILED;
    } else if (check && (dst.st_dev != want_dev || dst.st_ino != want_ino)) {
        status = LIST_OTHER_DIRECTORY;
    } else if ((*error = read_names(fd, l)) != 0) {
        status = LIST_FAILED;
    } else if (l->n) {
        l->st = malloc(l->n * sizeof *l->st);
        l->err = malloc(l->n * sizeof *l->err);
        if (!l->st || !l->err) {
            *error = ENOMEM;
            status = LIST_FAILED;
        } else {
            qsort_r(l->offsets, l->n, sizeof *l->offsets, by_name, l->names);
            stat_entries(fd, l, excluded, n_excluded, readahead_below);
        }
    }
    close(fd);
    return status;
}

/* ---------------------------------------------------------------------------- Python objects, with the GIL */

/* Seconds (int), seconds (float) and nanoseconds (int) of one timestamp, as posixmodule's fill_time. */
static int fill_time(PyObject *v, int index, time_t sec, unsigned long nsec) {
    PyObject *s = PyLong_FromLongLong((long long)sec);
    long long total;
    PyObject *ns;
    if (!__builtin_mul_overflow((long long)sec, 1000000000LL, &total) &&
        !__builtin_add_overflow(total, (long long)nsec, &total)) {
        ns = PyLong_FromLongLong(total);
    } else { /* (beyond the year 2262 or before 1677: Python's integers) */
        PyObject *billion = PyLong_FromLong(1000000000L), *frac = PyLong_FromUnsignedLong(nsec);
        PyObject *prod = s && billion ? PyNumber_Multiply(s, billion) : NULL;
        ns = prod && frac ? PyNumber_Add(prod, frac) : NULL;
        Py_XDECREF(billion);
        Py_XDECREF(frac);
        Py_XDECREF(prod);
    }
    PyObject *f = PyFloat_FromDouble(sec + nsec * 1e-9);
    if (!s || !ns || !f) {
        Py_XDECREF(s);
        Py_XDECREF(ns);
        Py_XDECREF(f);
        return -1;
    }
    PyStructSequence_SET_ITEM(v, index, s);
    PyStructSequence_SET_ITEM(v, index + 3, f);
    PyStructSequence_SET_ITEM(v, index + 6, ns);
    return 0;
}

static PyObject *id_long(unsigned long id) {
    return id == (unsigned long)(uid_t)-1 ? PyLong_FromLong(-1) : PyLong_FromUnsignedLong(id);
}

/* An os.stat_result with every field os.lstat gives on Linux (checked against it by walker.py). */
static PyObject *stat_result(const struct stat *st) {
    PyObject *v = PyStructSequence_New(stat_result_type);
    if (!v)
        return NULL;
    PyStructSequence_SET_ITEM(v, 0, PyLong_FromLong((long)st->st_mode));
    PyStructSequence_SET_ITEM(v, 1, PyLong_FromUnsignedLongLong(st->st_ino));
    PyStructSequence_SET_ITEM(v, 2, PyLong_FromUnsignedLongLong(st->st_dev));
    PyStructSequence_SET_ITEM(v, 3, PyLong_FromLong((long)st->st_nlink));
    PyStructSequence_SET_ITEM(v, 4, id_long(st->st_uid));
    PyStructSequence_SET_ITEM(v, 5, id_long(st->st_gid));
    PyStructSequence_SET_ITEM(v, 6, PyLong_FromLongLong(st->st_size));
    PyStructSequence_SET_ITEM(v, 16, PyLong_FromLong((long)st->st_blksize));
    PyStructSequence_SET_ITEM(v, 17, PyLong_FromLong((long)st->st_blocks));
    PyStructSequence_SET_ITEM(v, 18, PyLong_FromUnsignedLongLong(st->st_rdev));
    for (int i = 0; i < 7; i++)
        if (!PyStructSequence_GET_ITEM(v, i))
            goto fail;
    for (int i = 16; i < 19; i++)
        if (!PyStructSequence_GET_ITEM(v, i))
            goto fail;
    if (fill_time(v, 7, st->st_atim.tv_sec, st->st_atim.tv_nsec) < 0 ||
        fill_time(v, 8, st->st_mtim.tv_sec, st->st_mtim.tv_nsec) < 0 ||
        fill_time(v, 9, st->st_ctim.tv_sec, st->st_ctim.tv_nsec) < 0)
        goto fail;
    return v;
fail:
    Py_DECREF(v); /* (unset items are NULL: structseq's dealloc skips them) */
    return NULL;
}

static PyObject *joined(const char *a, Py_ssize_t alen, const char *b, size_t blen) {
    PyObject *o = PyBytes_FromStringAndSize(NULL, alen + (Py_ssize_t)blen);
    if (o) {
        memcpy(PyBytes_AS_STRING(o), a, alen);
        memcpy(PyBytes_AS_STRING(o) + alen, b, blen);
    }
    return o;
}

/* (entries, problems, regular_bytes) of a listed directory: entries (prefix+name, apfx+name, stat_result,
 * None) in name order, problems (prefix+name, errno) of the entries that could not be stat'ed. */
/* A run of non-directory entries i..j-1 of a listing (runs): (prefix, apfx, names, stats, count), the names
 * NUL-terminated one after the other and their struct stat packed (opaque to Python: reuse() reads them). */
static PyObject *run_tuple(const Listing *l, const size_t *idx, size_t n, PyObject *prefix, PyObject *apfx) {
    size_t len = 0;
    for (size_t k = 0; k < n; k++)
        len += strlen(l->names + l->offsets[idx[k]]) + 1;
    PyObject *names = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    PyObject *stats = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * sizeof(struct stat)));
    if (!names || !stats) {
        Py_XDECREF(names);
        Py_XDECREF(stats);
        return NULL;
    }
    char *np = PyBytes_AS_STRING(names);
    struct stat *sp = (struct stat *)PyBytes_AS_STRING(stats);
    for (size_t k = 0; k < n; k++) {
        const char *name = l->names + l->offsets[idx[k]];
        size_t nlen = strlen(name) + 1;
        memcpy(np, name, nlen);
        np += nlen;
        sp[k] = l->st[idx[k]];
    }
    return Py_BuildValue("(OONNn)", prefix, apfx, names, stats, (Py_ssize_t)n);
}

static PyObject *build(const Listing *l, const char *prefix, Py_ssize_t plen, const char *apfx, Py_ssize_t alen,
                       Py_ssize_t run_max, PyObject *prefix_obj, PyObject *apfx_obj) {
    PyObject *entries = PyList_New(0), *problems = PyList_New(0);
    long long regular = 0;
    size_t *run = NULL, in_run = 0; /* (runs) the non-directories not yet put in a run */
    if (!entries || !problems)
        goto fail;
    if (run_max > 0 && l->n && !(run = malloc(l->n * sizeof *run)))
        goto fail;
    for (size_t i = 0; i <= l->n; i++) {
        if (run && in_run && (i == l->n || in_run == (size_t)run_max || (!l->err[i] && S_ISDIR(l->st[i].st_mode)))) {
            PyObject *r = run_tuple(l, run, in_run, prefix_obj, apfx_obj);
            if (!r || PyList_Append(entries, r) < 0) {
                Py_XDECREF(r);
                goto fail;
            }
            Py_DECREF(r);
            in_run = 0;
        }
        if (i == l->n)
            break;
        if (l->err[i] < 0)
            continue;
        if (run && !l->err[i] && !S_ISDIR(l->st[i].st_mode)) {
            if (S_ISREG(l->st[i].st_mode))
                regular += l->st[i].st_size;
            run[in_run++] = i;
            continue;
        }
        const char *name = l->names + l->offsets[i];
        size_t nlen = strlen(name);
        PyObject *rel = joined(prefix, plen, name, nlen);
        if (!rel)
            goto fail;
        PyObject *item;
        if (l->err[i]) {
            item = Py_BuildValue("(Ni)", rel, l->err[i]);
            if (!item || PyList_Append(problems, item) < 0) {
                Py_XDECREF(item);
                goto fail;
            }
        } else {
            PyObject *ap = joined(apfx, alen, name, nlen);
            PyObject *st = ap ? stat_result(&l->st[i]) : NULL;
            if (!st) {
                Py_DECREF(rel);
                Py_XDECREF(ap);
                goto fail;
            }
            if (S_ISREG(l->st[i].st_mode))
                regular += l->st[i].st_size;
            item = PyTuple_Pack(4, rel, ap, st, Py_None);
            Py_DECREF(rel);
            Py_DECREF(ap);
            Py_DECREF(st);
            if (!item || PyList_Append(entries, item) < 0) {
                Py_XDECREF(item);
                goto fail;
            }
        }
        Py_DECREF(item);
    }
    free(run);
    return Py_BuildValue("(iNNL)", LIST_OK, entries, problems, regular);
fail:
    free(run);
    Py_XDECREF(entries);
    Py_XDECREF(problems);
    return NULL;
}

typedef struct Ahead Ahead;
static PyTypeObject AheadType;
/* (what ahead_take says; AHEAD_BUSY: ahead_try_take found the lock taken, and did nothing) */
enum { AHEAD_LIST_AND_QUEUE = 0, AHEAD_TAKEN = 1, AHEAD_LIST = 2, AHEAD_BUSY = 3 };
static int ahead_take(Ahead *a, const char *key, size_t len, int check, dev_t dev, ino_t ino, Listing *out);
static int ahead_try_take(Ahead *a, const char *key, size_t len, int check, dev_t dev, ino_t ino, Listing *out);
static void ahead_note(Ahead *a, const char *key, size_t len, const Listing *l);

/* The names of a listing taken from an Ahead marked excluded (not returned), as stat_entries does. */
static void exclude_entries(Listing *l, const char *const *excluded, Py_ssize_t n_excluded) {
    for (size_t i = 0; n_excluded && i < l->n; i++)
        if (is_excluded(l->names + l->offsets[i], excluded, n_excluded))
            l->err[i] = -1;
}

/* A relative path ("a/b") as the key of the walk's order ("a\0b"), in buf (len + 1 bytes). */
static void key_of(const char *rel, size_t len, char *buf) {
    for (size_t i = 0; i < len; i++)
        buf[i] = rel[i] == '/' ? 0 : rel[i];
    buf[len] = 0;
}

PyDoc_STRVAR(list_dir_doc,
"list_dir(path, follow, want, prefix, apfx, excluded, readahead_below, runs=0, ahead=None, root_fd=-1)\n"
"\n"
"List the directory ``path`` (bytes; ``follow``: False opens it with O_NOFOLLOW; with ``root_fd``, a\n"
"descriptor of the tree's root, it is opened below that by ``prefix`` with no symlink followed on the way)\n"
"if its (st_dev, st_ino)\n"
"are ``want`` (None: any), stat'ing every entry but the names in ``excluded`` (a tuple of bytes)\n"
"relative to it, and starting the read of regular files smaller than ``readahead_below`` (0: none).\n"
"Returns (0, entries, problems, regular_bytes): entries (prefix+name, apfx+name, os.stat_result, None)\n"
"sorted by name, problems (prefix+name, errno) of entries whose lstat failed, and the regular files'\n"
"total size; or (1, errno, None, 0) when the open failed, (2, 0, None, 0) when it is another directory,\n"
"(3, errno, None, 0) when the listing failed. With ``runs`` > 0, consecutive entries that are not directories\n"
"(up to ``runs`` of them) come as one run instead, a tuple (prefix, apfx, names, stats, count) for reuse().\n"
"With ``ahead`` (an Ahead of the same tree, given by the walking thread only, in walk order), the listing is\n"
"taken from those kept ahead when it is there and is the directory ``want`` names; else it is made here.");

static PyObject *list_dir(PyObject *self, PyObject *args) {
    const char *path, *prefix, *apfx;
    Py_ssize_t path_len, plen, alen, run_max = 0;
    int follow;
    PyObject *want, *excluded_names, *prefix_obj, *apfx_obj, *ahead_obj = Py_None;
    long long readahead_below;
    int rootfd = -1;
    if (!PyArg_ParseTuple(args, "y#pOSSO!L|nOi", &path, &path_len, &follow, &want, &prefix_obj, &apfx_obj,
                          &PyTuple_Type, &excluded_names, &readahead_below, &run_max, &ahead_obj, &rootfd))
        return NULL;
    if (ahead_obj != Py_None && !PyObject_TypeCheck(ahead_obj, &AheadType)) {
        PyErr_SetString(PyExc_TypeError, "ahead must be an Ahead or None");
        return NULL;
    }
    Ahead *ahead = ahead_obj == Py_None ? NULL : (Ahead *)ahead_obj;
    prefix = PyBytes_AS_STRING(prefix_obj);
    plen = PyBytes_GET_SIZE(prefix_obj);
    apfx = PyBytes_AS_STRING(apfx_obj);
    alen = PyBytes_GET_SIZE(apfx_obj);
    if ((Py_ssize_t)strlen(path) != path_len) {
        PyErr_SetString(PyExc_ValueError, "embedded null byte");
        return NULL;
    }
    int check = want != Py_None;
    unsigned long long want_dev = 0, want_ino = 0;
    if (check && !PyArg_ParseTuple(want, "KK", &want_dev, &want_ino))
        return NULL;
    Py_ssize_t n_excluded = PyTuple_GET_SIZE(excluded_names);
    const char **excluded = NULL;
    if (n_excluded) {
        excluded = PyMem_Malloc(n_excluded * sizeof *excluded);
        if (!excluded)
            return PyErr_NoMemory();
        for (Py_ssize_t i = 0; i < n_excluded; i++) {
            PyObject *nm = PyTuple_GET_ITEM(excluded_names, i);
            if (!PyBytes_Check(nm)) {
                PyMem_Free(excluded);
                PyErr_SetString(PyExc_TypeError, "excluded names must be bytes");
                return NULL;
            }
            excluded[i] = PyBytes_AS_STRING(nm); /* (immutable, and held by the tuple while we run) */
        }
    }
    Listing l = {0};
    int error = 0, status;
    size_t klen = plen ? (size_t)plen - 1 : 0; /* (prefix is rel + "/", or empty for the root) */
    if (readahead_below > 0)
        ahead = NULL; /* (an Ahead reads no file ahead: only walks that read none take from it) */
    char *key = ahead ? PyMem_Malloc(klen + 1) : NULL;
    char *rel = rootfd >= 0 && klen ? PyMem_Malloc(klen + 1) : NULL; /* (prefix without its '/') */
    if ((ahead && !key) || (rootfd >= 0 && klen && !rel)) {
        PyMem_Free(key);
        PyMem_Free(excluded);
        return PyErr_NoMemory();
    }
    if (rel) {
        memcpy(rel, prefix, klen);
        rel[klen] = 0;
    }
    /* A listing the threads made is taken with the GIL held: taking it is a lookup under their lock, and
     * giving up the GIL for that cost the walking thread a wait to get it back behind the readers, ~4,000
     * times in realtree's changed re-backup. The GIL is given up only to list here, or to wait for the
     * lock (held by a thread at nice 19, which may wait for a core: not with the GIL held). */
    int took = AHEAD_LIST;
    if (key) {
        key_of(prefix, klen, key);
        took = ahead_try_take(ahead, key, klen, check, (dev_t)want_dev, (ino_t)want_ino, &l);
    }
    if (took == AHEAD_TAKEN) {
        exclude_entries(&l, excluded, n_excluded);
        status = LIST_OK;
    } else {
        Py_BEGIN_ALLOW_THREADS
        if (took == AHEAD_BUSY)
            took = ahead_take(ahead, key, klen, check, (dev_t)want_dev, (ino_t)want_ino, &l);
        if (took == AHEAD_TAKEN) {
            exclude_entries(&l, excluded, n_excluded);
            status = LIST_OK;
        } else {
            status = list_nogil(path, follow, rel ? rootfd : -1, rel, check, (dev_t)want_dev,
                                (ino_t)want_ino, excluded, n_excluded, readahead_below, &l, &error);
            if (took == AHEAD_LIST_AND_QUEUE && status == LIST_OK)
                ahead_note(ahead, key, klen, &l);
        }
        Py_END_ALLOW_THREADS
    }
    PyMem_Free(key);
    PyMem_Free(rel);
    PyMem_Free(excluded);
    PyObject *out;
    if (status == LIST_OK)
        out = build(&l, prefix, plen, apfx, alen, run_max, prefix_obj, apfx_obj);
    else
        out = Py_BuildValue("(iiOi)", status, error, Py_None, 0);
    listing_free(&l);
    return out;
}


/* ---------------------------------------------------- an incremental backup's runs, reused from the parent */

/* The record format of entry.py (a rule of its own there; checked against it by the tests: both paths
 * write the same catalog). */
enum { T_FILE = 1, T_DIR = 2, T_SYMLINK = 3, T_CHR = 4, T_BLK = 5, T_FIFO = 6, T_SOCK = 7 };
enum { F_XATTRS = 1, F_SPARSE = 2, F_SLICES = 4 };
#define REC_PATH 72  /* u32 length + the 68-byte header */
#define REC_ATIME 44
#define DIGEST 32

typedef struct {
    unsigned type, flags, mode, uid, gid, nlink;
    unsigned long long size, ino, rdev;
    long long mtime, ctime, atime;
} Header;

static unsigned long long le(const unsigned char *p, int n) {
    unsigned long long v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void header(const unsigned char *r, Header *h) {
    h->type = r[4];
    h->flags = r[5];
    h->mode = (unsigned)le(r + 8, 4);
    h->uid = (unsigned)le(r + 12, 4);
    h->gid = (unsigned)le(r + 16, 4);
    h->size = le(r + 20, 8);
    h->mtime = (long long)le(r + 28, 8);
    h->ctime = (long long)le(r + 36, 8);
    h->atime = (long long)le(r + 44, 8);
    h->ino = le(r + 52, 8);
    h->nlink = (unsigned)le(r + 60, 4);
    h->rdev = le(r + 64, 8);
}

static int type_of(mode_t m) {
    switch (m & S_IFMT) {
    case S_IFREG: return T_FILE;
    case S_IFDIR: return T_DIR;
    case S_IFLNK: return T_SYMLINK;
    case S_IFCHR: return T_CHR;
    case S_IFBLK: return T_BLK;
    case S_IFIFO: return T_FIFO;
    case S_IFSOCK: return T_SOCK;
    }
    return 0;
}

/* A timestamp in ns as os.stat_result's st_*_time_ns; 0 if it does not fit a record's i64. */
static int ns_of(struct timespec t, long long *out) {
    long long v;
    return !__builtin_mul_overflow((long long)t.tv_sec, 1000000000LL, &v) &&
           !__builtin_add_overflow(v, (long long)t.tv_nsec, out);
}

/* backup.py's _same_file / _same_node: the fields the parent's record must still hold (ids of -1, sizes
 * or times beyond the record's ranges never match, as they do not in Python). */
static int same(const Header *h, const struct stat *st, int typ, long long *atime) {
    long long mt, ct;
    if ((int)h->type != typ || !ns_of(st->st_mtim, &mt) || !ns_of(st->st_ctim, &ct) || !ns_of(st->st_atim, atime))
        return 0;
    if (h->mtime != mt || h->ctime != ct || h->ino != (unsigned long long)st->st_ino || h->mode != st->st_mode ||
        st->st_uid == (uid_t)-1 || st->st_gid == (gid_t)-1 || h->uid != st->st_uid || h->gid != st->st_gid ||
        h->nlink != (unsigned long long)st->st_nlink)
        return 0;
    if (typ != T_DIR && (st->st_size < 0 || h->size != (unsigned long long)st->st_size))
        return 0;
    return (typ != T_CHR && typ != T_BLK) || h->rdev == (unsigned long long)st->st_rdev;
}

/* entry.record_digests: where a FILE record's chunk list starts, its count and step; -1 if it does not
 * parse (then the Python path meets the same record and says so). */
static Py_ssize_t chunk_list(const unsigned char *r, Py_ssize_t len, unsigned flags, Py_ssize_t *n, Py_ssize_t *step) {
    Py_ssize_t pos = REC_PATH;
    for (int i = 0; i < 4; i++) {
        if (pos + 2 > len)
            return -1;
        pos += 2 + (Py_ssize_t)le(r + pos, 2);
    }
    if (flags & F_XATTRS) {
        if (pos + 2 > len)
            return -1;
        Py_ssize_t count = (Py_ssize_t)le(r + pos, 2);
        pos += 2;
        for (Py_ssize_t i = 0; i < count; i++) {
            if (pos + 2 > len)
                return -1;
            pos += 2 + (Py_ssize_t)le(r + pos, 2);
            if (pos + 4 > len)
                return -1;
            pos += 4 + (Py_ssize_t)le(r + pos, 4);
        }
    }
    if (flags & F_SPARSE) {
        if (pos + 4 > len)
            return -1;
        pos += 4 + 16 * (Py_ssize_t)le(r + pos, 4);
    }
    if (pos + 4 > len)
        return -1;
    *n = (Py_ssize_t)le(r + pos, 4);
    *step = flags & F_SLICES ? DIGEST + 8 : DIGEST + 4;
    pos += 4;
    return pos + *n * *step <= len ? pos : -1;
}

/* The parent cursor (backup.ParentCursor: _it yields (key, record) in key order; _key, _cur its head):
 * find(key) as its find does. Returns a borrowed record or NULL (with *err set on an exception). */
typedef struct {
    PyObject *it, *key, *cur; /* owned (key, cur: NULL when the parent's records are done) */
} Cursor;

static int keycmp(PyObject *k, const char *key, Py_ssize_t klen) {
    Py_ssize_t n = PyBytes_GET_SIZE(k);
    int c = memcmp(PyBytes_AS_STRING(k), key, n < klen ? n : klen);
    return c ? c : (n < klen ? -1 : n > klen);
}

static PyObject *cursor_find(Cursor *c, const char *key, Py_ssize_t klen, int *err) {
    if (c->key && keycmp(c->key, key, klen) < 0) {
        for (;;) {
            PyObject *pair = PyIter_Next(c->it);
            if (!pair) {
                Py_CLEAR(c->key);
                Py_CLEAR(c->cur);
                *err = PyErr_Occurred() != NULL;
                return NULL;
            }
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(pair, 0))) {
                Py_DECREF(pair);
                PyErr_SetString(PyExc_TypeError, "the parent's records must be (bytes key, record) pairs");
                *err = 1;
                return NULL;
            }
            int cmp = keycmp(PyTuple_GET_ITEM(pair, 0), key, klen);
            if (cmp >= 0) {
                Py_SETREF(c->key, Py_NewRef(PyTuple_GET_ITEM(pair, 0)));
                Py_SETREF(c->cur, Py_NewRef(PyTuple_GET_ITEM(pair, 1)));
                Py_DECREF(pair);
                return cmp == 0 ? c->cur : NULL;
            }
            Py_DECREF(pair);
        }
    }
    return c->key && keycmp(c->key, key, klen) == 0 ? c->cur : NULL;
}

/* Digests reuse() remembers as known (then forgets all and starts again: memory stays bounded). A re-backup's
 * reused files name the same chunks over and over -- small files share their bundle's -- and each knows() is
 * an index look-up in Python: realtree's changed re-backup made 27,790 calls for 2,222 digests. */
#define CONFIRMED_MAX 65536

/* The reused entry (path, record, digests or None, size) of an unchanged one, or Py_None if it must go the
 * Python way (changed, new, a chunk no longer known, a record that does not parse); NULL on an exception.
 * known: the last digest found known (backup.TreeBackup._known), updated. */
static PyObject *reuse_one(PyObject *path, const struct stat *st, const Py_buffer *b, PyObject *knows,
                           PyObject **known, PyObject *confirmed, long long *counts) {
    const unsigned char *r = b->buf;
    Py_ssize_t len = b->len;
    int typ = type_of(st->st_mode);
    long long atime;
    if (len < REC_PATH + 8 || !typ || typ == T_DIR)
        Py_RETURN_NONE;
    Header h;
    header(r, &h);
    if (!same(&h, st, typ, &atime))
        Py_RETURN_NONE;
    PyObject *digests = Py_None;
    if (typ == T_FILE) {
        Py_ssize_t n, step, pos = chunk_list(r, len, h.flags, &n, &step);
        if (pos < 0 || !(digests = PyList_New(n)))
            return pos < 0 ? Py_NewRef(Py_None) : NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            const char *d = (const char *)r + pos + i * step;
            PyObject *dig = PyBytes_FromStringAndSize(d, DIGEST);
            if (!dig)
                goto fail;
            PyList_SET_ITEM(digests, i, dig);
            if (PyBytes_GET_SIZE(*known) == DIGEST && memcmp(PyBytes_AS_STRING(*known), d, DIGEST) == 0)
                continue;
            int yes = confirmed ? PySet_Contains(confirmed, dig) : 0;
            if (yes < 0)
                goto fail;
            if (yes)
                continue;
            PyObject *ok = PyObject_CallOneArg(knows, dig);
            yes = ok ? PyObject_IsTrue(ok) : -1;
            Py_XDECREF(ok);
            if (yes < 0)
                goto fail;
            if (yes && confirmed && PySet_GET_SIZE(confirmed) >= CONFIRMED_MAX && PySet_Clear(confirmed) < 0)
                goto fail;
            if (yes && confirmed && PySet_Add(confirmed, dig) < 0)
                goto fail;
            if (!yes) { /* (read again: its parent was collected meanwhile) */
                Py_DECREF(digests);
                Py_RETURN_NONE;
            }
        }
        if (n)
            Py_SETREF(*known, Py_NewRef(PyList_GET_ITEM(digests, n - 1)));
    } else {
        Py_INCREF(digests);
    }
    PyObject *rec = PyBytes_FromStringAndSize((const char *)r, len);
    if (!rec)
        goto fail;
    /* the access time: a file's where it moved, a special file's always (directories and symlinks record none) */
    if ((typ == T_FILE && h.atime != atime) || (typ != T_FILE && typ != T_SYMLINK)) {
        unsigned char *w = (unsigned char *)PyBytes_AS_STRING(rec) + REC_ATIME;
        for (int i = 0; i < 8; i++)
            w[i] = (unsigned char)((unsigned long long)atime >> (8 * i));
    }
    if (typ == T_FILE) {
        counts[0]++;
        counts[1] += st->st_size;
    } else {
        counts[typ == T_SYMLINK ? 2 : 3]++;
    }
    return Py_BuildValue("(NNNL)", Py_NewRef(path), rec, digests, (long long)(typ == T_FILE ? st->st_size : 0));
fail:
    Py_DECREF(digests);
    return NULL;
}

PyDoc_STRVAR(reuse_doc,
"reuse(run, cursor, knows, known, confirmed=None) -> (out, slow, known, counts)\n"
"\n"
"An incremental backup's run of entries (list_dir with runs) against the parent's records (cursor: a\n"
"backup.ParentCursor, advanced as its find() would): ``out`` in walk order holds, for each entry the parent's\n"
"record still describes, what TreeBackup._walk_file / _walk_node put in the pending queue -- (path, record\n"
"with the access time patched, digests or None, size) -- after ``knows(digest)`` said its chunks are there\n"
"(``known``: the last digest known, returned updated; ``confirmed``, a set: digests found known before, kept\n"
"there, at most 65,536 of them); and for the others (positions in ``slow``)\n"
"(path, abspath, os.stat_result, the parent's record or None) for the Python path. ``counts``: files reused,\n"
"their bytes, symlinks and special files reused.");

static PyObject *py_reuse(PyObject *self, PyObject *args) {
    PyObject *run, *cursor, *knows, *known, *confirmed = NULL, *prefix, *apfx, *names, *stats;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "O!OOS|O!", &PyTuple_Type, &run, &cursor, &knows, &known, &PySet_Type, &confirmed) ||
        !PyArg_ParseTuple(run, "SSSSn", &prefix, &apfx, &names, &stats, &count))
        return NULL;
    if (PyBytes_GET_SIZE(stats) != count * (Py_ssize_t)sizeof(struct stat)) {
        PyErr_SetString(PyExc_ValueError, "not a run of list_dir");
        return NULL;
    }
    Cursor c = {PyObject_GetAttrString(cursor, "_it"), PyObject_GetAttrString(cursor, "_key"),
                PyObject_GetAttrString(cursor, "_cur")};
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix), alen = PyBytes_GET_SIZE(apfx);
    char *key = NULL;
    PyObject *out = PyList_New(count), *slow = PyList_New(0), *result = NULL;
    long long counts[4] = {0, 0, 0, 0};
    Py_INCREF(known);
    if (!c.it || !c.key || !c.cur || !out || !slow)
        goto done;
    if (c.key == Py_None)
        Py_CLEAR(c.key);
    if (c.key && !PyBytes_Check(c.key)) {
        PyErr_SetString(PyExc_TypeError, "the parent cursor's key must be bytes");
        goto done;
    }
    if (!(key = PyMem_Malloc(plen + PyBytes_GET_SIZE(names) + 1))) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < plen; i++) /* (path_key: "/" -> NUL) */
        key[i] = PyBytes_AS_STRING(prefix)[i] == '/' ? 0 : PyBytes_AS_STRING(prefix)[i];
    const char *name = PyBytes_AS_STRING(names);
    const struct stat *st = (const struct stat *)PyBytes_AS_STRING(stats);
    for (Py_ssize_t i = 0; i < count; i++) {
        size_t nlen = strlen(name);
        memcpy(key + plen, name, nlen);
        PyObject *path = joined(PyBytes_AS_STRING(prefix), plen, name, nlen);
        int err = 0;
        PyObject *prec = path ? cursor_find(&c, key, plen + (Py_ssize_t)nlen, &err) : NULL;
        if (!path || err) {
            Py_XDECREF(path);
            goto done;
        }
        PyObject *item = Py_None;
        Py_INCREF(item);
        if (prec) {
            Py_buffer b;
            if (PyObject_GetBuffer(prec, &b, PyBUF_SIMPLE) < 0) {
                Py_DECREF(path);
                goto done;
            }
            Py_SETREF(item, reuse_one(path, &st[i], &b, knows, &known, confirmed, counts));
            PyBuffer_Release(&b);
        }
        if (item == Py_None) {
            PyObject *ap = joined(PyBytes_AS_STRING(apfx), alen, name, nlen), *sr = ap ? stat_result(&st[i]) : NULL;
            PyObject *pos = PyLong_FromSsize_t(i);
            Py_SETREF(item, sr && pos ? PyTuple_Pack(4, path, ap, sr, prec ? prec : Py_None) : NULL);
            if (item && PyList_Append(slow, pos) < 0)
                Py_CLEAR(item);
            Py_XDECREF(ap);
            Py_XDECREF(sr);
            Py_XDECREF(pos);
        }
        Py_DECREF(path);
        if (!item)
            goto done;
        PyList_SET_ITEM(out, i, item);
        name += nlen + 1;
    }
    if (PyObject_SetAttrString(cursor, "_key", c.key ? c.key : Py_None) < 0 ||
        PyObject_SetAttrString(cursor, "_cur", c.cur ? c.cur : Py_None) < 0)
        goto done;
    result = Py_BuildValue("(OOO(LLLL))", out, slow, known, counts[0], counts[1], counts[2], counts[3]);
done:
    PyMem_Free(key);
    Py_XDECREF(c.it);
    Py_XDECREF(c.key);
    Py_XDECREF(c.cur);
    Py_XDECREF(out);
    Py_XDECREF(slow);
    Py_DECREF(known);
    return result;
}

PyDoc_STRVAR(keyed_records_doc,
"keyed_records(data, last) -> (pairs, problem, at)\n"
"\n"
"catalog.CatalogReader.records(keyed=True) of one catalog chunk's plaintext ``data`` (bytes) in one call:\n"
"``pairs`` [(key, memoryview of the record)] (key: the path with \"/\" -> NUL) while each key is greater than\n"
"the one before (``last``: the previous chunk's last key, or None); ``problem`` None, or where they stop:\n"
"\"truncated\" / \"length\" (entry.iter_records' RecordError) or \"order\" (the record at ``at`` is out of order).");

static PyObject *py_keyed_records(PyObject *self, PyObject *args) {
    PyObject *data, *last;
    if (!PyArg_ParseTuple(args, "SO", &data, &last))
        return NULL;
    if (last != Py_None && !PyBytes_Check(last)) {
        PyErr_SetString(PyExc_TypeError, "last must be bytes or None");
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t end = PyBytes_GET_SIZE(data), pos = 0;
    PyObject *view = PyMemoryView_FromObject(data), *pairs = PyList_New(0), *prev = Py_NewRef(last);
    const char *problem = NULL;
    Py_ssize_t at = 0;
    if (!view || !pairs)
        goto fail;
    while (pos < end) {
        if (end - pos < 4) {
            problem = "truncated";
            break;
        }
        Py_ssize_t ln = (Py_ssize_t)le(buf + pos, 4);
        if (ln < REC_PATH + 2 || pos + ln > end) {
            problem = "length";
            break;
        }
        Py_ssize_t n = (Py_ssize_t)le(buf + pos + REC_PATH, 2), avail = ln - REC_PATH - 2;
        if (n > avail) /* (as the Python slice: what the record holds) */
            n = avail;
        PyObject *key = PyBytes_FromStringAndSize((const char *)buf + pos + REC_PATH + 2, n);
        if (!key)
            goto fail;
        char *k = PyBytes_AS_STRING(key);
        for (Py_ssize_t i = 0; i < n; i++)
            if (k[i] == '/')
                k[i] = 0;
        if (prev != Py_None && keycmp(prev, k, n) >= 0) {
            Py_DECREF(key);
            problem = "order";
            at = pos;
            break;
        }
        PyObject *rec = PySequence_GetSlice(view, pos, pos + ln);
        PyObject *pair = rec ? PyTuple_Pack(2, key, rec) : NULL;
        Py_XDECREF(rec);
        Py_SETREF(prev, key);
        if (!pair || PyList_Append(pairs, pair) < 0) {
            Py_XDECREF(pair);
            goto fail;
        }
        Py_DECREF(pair);
        pos += ln;
    }
    Py_DECREF(view);
    Py_DECREF(prev);
    return Py_BuildValue("(Nzn)", pairs, problem, at);
fail:
    Py_XDECREF(view);
    Py_XDECREF(pairs);
    Py_DECREF(prev);
    return NULL;
}

/* ---------------------------------------------------------------------------- writing a reused run */

PyDoc_STRVAR(run_refs_doc,
"run_refs(run, last) -> (refs, last, files, size)\n"
"\n"
"backup.TreeBackup._write_reused's count of a run of reused entries (``(path, record, digests or None, size)``):\n"
"``refs`` the digests of its files' chunks joined, each left out where it repeats the one before (``last``:\n"
"the digest before the run, returned updated: the files of a bundle share it), ``files`` how many are\n"
"regular files (digests not None) and ``size`` their bytes.");

static PyObject *py_run_refs(PyObject *self, PyObject *args) {
    PyObject *run, *last;
    if (!PyArg_ParseTuple(args, "O!S", &PyList_Type, &run, &last))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(run), cap = 0;
    for (Py_ssize_t i = 0; i < n; i++) { /* (an upper bound: every digest of every file) */
        PyObject *item = PyList_GET_ITEM(run, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 4) {
            PyErr_SetString(PyExc_TypeError, "a run holds (path, record, digests, size) tuples");
            return NULL;
        }
        PyObject *digests = PyTuple_GET_ITEM(item, 2);
        if (digests != Py_None && !PyList_Check(digests)) {
            PyErr_SetString(PyExc_TypeError, "digests must be a list or None");
            return NULL;
        }
        cap += digests == Py_None ? 0 : PyList_GET_SIZE(digests) * DIGEST;
    }
    PyObject *refs = PyBytes_FromStringAndSize(NULL, cap);
    if (!refs)
        return NULL;
    char *out = PyBytes_AS_STRING(refs);
    Py_ssize_t at = 0;
    long long files = 0, size = 0;
    const char *prev = PyBytes_GET_SIZE(last) == DIGEST ? PyBytes_AS_STRING(last) : NULL;
    PyObject *prev_obj = last;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(run, i), *digests = PyTuple_GET_ITEM(item, 2);
        if (digests == Py_None)
            continue;
        files++;
        long long sz = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 3));
        if (sz == -1 && PyErr_Occurred())
            goto fail;
        size += sz;
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(digests); j++) {
            PyObject *d = PyList_GET_ITEM(digests, j);
            if (!PyBytes_Check(d) || PyBytes_GET_SIZE(d) != DIGEST) {
                PyErr_SetString(PyExc_TypeError, "a digest must be 32 bytes");
                goto fail;
            }
            if (prev && memcmp(prev, PyBytes_AS_STRING(d), DIGEST) == 0)
                continue;
            memcpy(out + at, PyBytes_AS_STRING(d), DIGEST);
            at += DIGEST;
            prev = PyBytes_AS_STRING(d);
            prev_obj = d;
        }
    }
    if (_PyBytes_Resize(&refs, at) < 0)
        return NULL;
    return Py_BuildValue("(NOLL)", refs, prev_obj, files, size);
fail:
    Py_DECREF(refs);
    return NULL;
}

PyDoc_STRVAR(run_cuts_doc,
"run_cuts(run, size, count, table, modulus, min_chunk, max_chunk) -> (cuts, size, count)\n"
"\n"
"catalog.CatalogWriter.add_run's cut test over a run of ``(path, record, ...)`` tuples, the writer's open chunk\n"
"holding ``size`` bytes of ``count`` records: ``cuts`` the positions in the run after which a chunk is cut\n"
"(``size >= max_chunk``, or ``size >= min_chunk`` and the CRC-32 of the path says so: ``table[crc & 0xFFFF] %\n"
"modulus == 0`` with an encrypted vault's cut table, ``crc % modulus == 0`` with ``table`` None), and the\n"
"open chunk's size and count after the run.");

static PyObject *py_run_cuts(PyObject *self, PyObject *args) {
    PyObject *run, *table;
    long long size, count, modulus, min_chunk, max_chunk;
    if (!PyArg_ParseTuple(args, "O!LLOLLL", &PyList_Type, &run, &size, &count, &table, &modulus, &min_chunk,
                          &max_chunk))
        return NULL;
    if (modulus <= 0 || (table != Py_None && (!PyBytes_Check(table) || PyBytes_GET_SIZE(table) != 65536))) {
        PyErr_SetString(PyExc_ValueError, "the cut table must be 65,536 bytes (or None), the modulus positive");
        return NULL;
    }
    const unsigned char *t = table == Py_None ? NULL : (const unsigned char *)PyBytes_AS_STRING(table);
    PyObject *cuts = PyList_New(0);
    if (!cuts)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(run); i++) {
        PyObject *item = PyList_GET_ITEM(run, i);
        PyObject *path = PyTuple_Check(item) && PyTuple_GET_SIZE(item) >= 2 ? PyTuple_GET_ITEM(item, 0) : NULL;
        PyObject *rec = path ? PyTuple_GET_ITEM(item, 1) : NULL;
        if (!path || !PyBytes_Check(path) || !PyBytes_Check(rec)) {
            PyErr_SetString(PyExc_TypeError, "a run holds (path, record, ...) tuples of bytes");
            goto fail;
        }
        size += PyBytes_GET_SIZE(rec);
        count++;
        int cut = size >= max_chunk;
        if (!cut && size >= min_chunk) {
            unsigned long crc = crc32(0L, (const Bytef *)PyBytes_AS_STRING(path), (uInt)PyBytes_GET_SIZE(path));
            cut = (t ? t[crc & 0xFFFF] : crc) % (unsigned long long)modulus == 0;
        }
        if (cut) {
            PyObject *at = PyLong_FromSsize_t(i);
            if (!at || PyList_Append(cuts, at) < 0) {
                Py_XDECREF(at);
                goto fail;
            }
            Py_DECREF(at);
            size = count = 0;
        }
    }
    return Py_BuildValue("(NLL)", cuts, size, count);
fail:
    Py_DECREF(cuts);
    return NULL;
}

/* ---------------------------------------------------------------------------- the metadata warmer's walk */

#define WARM_MAX_DEPTH 256 /* (one descriptor open per level: deeper directories are left to the walk) */

typedef struct {
    int one_dev;
    dev_t dev;
    long long entries;
    char *visited; /* with record: the directories' relative paths, NUL-terminated, in the order listed */
    size_t visited_len, visited_cap;
    int record, failed;
} Warm;

static void warm_note(Warm *w, const char *rel, size_t len) {
    if (!w->record || w->failed)
        return;
    if (w->visited_len + len + 1 > w->visited_cap) {
        size_t cap = w->visited_cap ? w->visited_cap * 2 : 4096;
        while (cap < w->visited_len + len + 1)
            cap *= 2;
        char *p = realloc(w->visited, cap);
        if (!p) {
            w->failed = 1;
            return;
        }
        w->visited = p;
        w->visited_cap = cap;
    }
    memcpy(w->visited + w->visited_len, rel, len + 1);
    w->visited_len += len + 1;
}

/* Lists and lstat's the open directory fd (closed here), then its subdirectories on the device, in the walk's
 * order: depth-first pre-order, siblings by name. rel: its path below the root (for the record only). */
static void warm_dir(Warm *w, int fd, char *rel, size_t rel_len, int depth) {
    Listing l = {0};
    warm_note(w, rel, rel_len);
    if (read_names(fd, &l) != 0 || !l.n) {
        close(fd);
        listing_free(&l);
        return;
    }
    qsort_r(l.offsets, l.n, sizeof *l.offsets, by_name, l.names);
    unsigned char *sub = calloc(l.n, 1);
    for (size_t i = 0; sub && i < l.n; i++) {
        struct stat st;
        if (fstatat(fd, l.names + l.offsets[i], &st, AT_SYMLINK_NOFOLLOW) == 0) {
            w->entries++;
            sub[i] = S_ISDIR(st.st_mode) && (!w->one_dev || st.st_dev == w->dev);
        }
    }
    for (size_t i = 0; sub && depth < WARM_MAX_DEPTH && i < l.n; i++) {
        if (!sub[i])
            continue;
        const char *name = l.names + l.offsets[i];
        int cfd = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (cfd < 0)
            continue;
        size_t nlen = strlen(name), clen = rel_len + (rel_len ? 1 : 0) + nlen;
        char *crel = w->record ? malloc(clen + 1) : NULL;
        if (crel) {
            memcpy(crel, rel, rel_len);
            if (rel_len)
                crel[rel_len] = '/';
            memcpy(crel + clen - nlen, name, nlen + 1);
        }
        warm_dir(w, cfd, crel ? crel : "", crel ? clen : 0, depth + 1);
        free(crel);
    }
    free(sub);
    close(fd);
    listing_free(&l);
}

/* The warmer's walk on several threads. One thread waits for one inode-table or directory block after
 * another, as `find` does; the device serves several at once (cold cache, realtree's 62k entries: one thread
 * 0.94 s, four 0.59 s, in Python). The threads take the pending directory that comes first in the walk's
 * order (a heap keyed by the path with '/' as NUL: the byte order of that key is depth-first pre-order,
 * as walker._Lister), so the backup's walk, one step behind, finds what it needs next already read. */

typedef struct {
    char *key; /* the path below the root, '/' written as NUL; "" for the root */
    size_t len;
    void *item; /* (an Ahead's heap of kept listings: the Kept whose key this is) */
} WarmDir;

/* Directories waiting, a heap by key: the one that comes first in the walk's order on top. */
typedef struct {
    WarmDir *heap;
    size_t n, cap;
} DirHeap;

typedef struct {
    Warm *w;
    int rootfd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    DirHeap pending;
    int busy;     /* directories being listed (their subdirectories not pushed yet) */
    long long entries;
} WarmPool;

static int warm_key_less(const WarmDir *a, const WarmDir *b) {
    size_t m = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->key, b->key, m);
    return c < 0 || (c == 0 && a->len < b->len);
}

static int warm_push_item(DirHeap *p, char *key, size_t len, void *item) { /* (under its owner's lock) */
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        WarmDir *h = realloc(p->heap, cap * sizeof *h);
        if (!h)
            return -1;
        p->heap = h;
        p->cap = cap;
    }
    size_t i = p->n++;
    p->heap[i] = (WarmDir){key, len, item};
    while (i && warm_key_less(&p->heap[i], &p->heap[(i - 1) / 2])) {
        WarmDir t = p->heap[i];
        p->heap[i] = p->heap[(i - 1) / 2];
        p->heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
    return 0;
}

static int warm_push(DirHeap *p, char *key, size_t len) { return warm_push_item(p, key, len, NULL); }

static WarmDir warm_pop(DirHeap *p) { /* (the same, n > 0) */
    WarmDir top = p->heap[0];
    p->heap[0] = p->heap[--p->n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < p->n && warm_key_less(&p->heap[l], &p->heap[m]))
            m = l;
        if (r < p->n && warm_key_less(&p->heap[r], &p->heap[m]))
            m = r;
        if (m == i)
            break;
        WarmDir t = p->heap[i];
        p->heap[i] = p->heap[m];
        p->heap[m] = t;
        i = m;
    }
    return top;
}

/* Opens the directory at key below the root without following any symlink and without leaving the root
 * (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS; before Linux 5.6 or where seccomp refuses it, one O_NOFOLLOW
 * openat per component). */
static int warm_open(int rootfd, const WarmDir *d) {
    if (!d->len)
        return openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    char *path = malloc(d->len + 1);
    if (!path)
        return -1;
    for (size_t i = 0; i < d->len; i++)
        path[i] = d->key[i] ? d->key[i] : '/';
    path[d->len] = 0;
    struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    int fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
    if (fd < 0 && (errno == ENOSYS || errno == EPERM)) { /* (EPERM: a seccomp filter that refuses openat2) */
        fd = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        for (char *part = path, *next; fd >= 0 && part; part = next) {
            next = strchr(part, '/');
            if (next)
                *next++ = 0;
            int cfd = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            close(fd);
            fd = cfd;
        }
    }
    free(path);
    return fd;
}

/* Lists and lstat's one directory; returns its subdirectories on the device as keys (a NULL-ended array). */
static WarmDir *warm_list(WarmPool *p, const WarmDir *d, long long *entries) {
    int fd = warm_open(p->rootfd, d);
    if (fd < 0)
        return NULL;
    Listing l = {0};
    WarmDir *subs = NULL;
    size_t n = 0;
    if (read_names(fd, &l) == 0 && l.n && (subs = calloc(l.n + 1, sizeof *subs))) {
        for (size_t i = 0; i < l.n; i++) {
            const char *name = l.names + l.offsets[i];
            struct stat st;
            if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
                continue;
            (*entries)++;
            if (!S_ISDIR(st.st_mode) || (p->w->one_dev && st.st_dev != p->w->dev) || d->len > 4000)
                continue;
            size_t nlen = strlen(name), clen = d->len + (d->len ? 1 : 0) + nlen;
            char *key = malloc(clen + 1);
            if (!key)
                continue;
            key[clen] = 0;
            memcpy(key, d->key, d->len);
            if (d->len)
                key[d->len] = 0;
            memcpy(key + clen - nlen, name, nlen);
            subs[n++] = (WarmDir){key, clen};
        }
    }
    close(fd);
    listing_free(&l);
    return subs;
}

static void *warm_worker(void *arg) {
    WarmPool *p = arg;
    long long entries = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->pending.n && p->busy)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->pending.n)
            break; /* nothing pending and nobody listing: the walk is over */
        WarmDir d = warm_pop(&p->pending);
        p->busy++;
        if (p->w->record) {
            for (size_t i = 0; i < d.len; i++)
                d.key[i] = d.key[i] ? d.key[i] : '/';
            warm_note(p->w, d.key, d.len); /* (the key is NUL-terminated here: its buffer holds len + 1) */
            for (size_t i = 0; i < d.len; i++)
                d.key[i] = d.key[i] == '/' ? 0 : d.key[i];
        }
        pthread_mutex_unlock(&p->mu);
        WarmDir *subs = warm_list(p, &d, &entries);
        free(d.key);
        pthread_mutex_lock(&p->mu);
        for (WarmDir *s = subs; s && s->key; s++)
            if (warm_push(&p->pending, s->key, s->len) < 0)
                free(s->key);
        free(subs);
        p->busy--;
        pthread_cond_broadcast(&p->cv);
    }
    p->entries += entries;
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void warm_parallel(Warm *w, int rootfd, int threads) {
    WarmPool p = {.w = w, .rootfd = rootfd};
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    pthread_t tids[64];
    int started = 0;
    char *root = calloc(1, 1);
    if (root && warm_push(&p.pending, root, 0) == 0) {
        for (; started < threads && started < 64; started++)
            if (pthread_create(&tids[started], NULL, warm_worker, &p) != 0)
                break;
        if (!started)
            warm_worker(&p);
    }
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    while (p.pending.n)
        free(warm_pop(&p.pending).key);
    free(p.pending.heap);
    w->entries = p.entries;
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv);
}

PyDoc_STRVAR(warm_doc,
"warm(root, dev, record=False, threads=1) -> (entries, visited)\n"
"\n"
"lstat every entry of the tree at ``root`` (bytes, followed) in the walk's order, entering directories on\n"
"device ``dev`` only (None: all), without the GIL and without building any Python object: the metadata\n"
"warmer's walk (walker.MetadataWarmer). ``entries``: how many were stat'ed; ``visited`` (with ``record``):\n"
"the directories listed, by path below the root, in the order they were taken (else None). With ``threads``\n"
"> 1, as many threads list the directories that come first in the walk's order, in parallel.");

static PyObject *py_warm(PyObject *self, PyObject *args) {
    const char *root;
    PyObject *dev;
    int record = 0, threads = 1;
    if (!PyArg_ParseTuple(args, "yO|pi", &root, &dev, &record, &threads))
        return NULL;
    Warm w = {0};
    w.record = record;
    if (dev != Py_None) {
        unsigned long long d = PyLong_AsUnsignedLongLong(dev);
        if (d == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
        w.one_dev = 1;
        w.dev = (dev_t)d;
    }
    Py_BEGIN_ALLOW_THREADS
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0 && threads > 1) {
        warm_parallel(&w, fd, threads);
        close(fd);
    } else if (fd >= 0)
        warm_dir(&w, fd, "", 0, 0);
    Py_END_ALLOW_THREADS
    PyObject *visited = Py_None;
    Py_INCREF(visited);
    if (record && !w.failed) {
        Py_DECREF(visited);
        visited = PyList_New(0);
        for (size_t pos = 0; visited && pos < w.visited_len;) {
            size_t len = strlen(w.visited + pos);
            PyObject *b = PyBytes_FromStringAndSize(w.visited + pos, len);
            if (!b || PyList_Append(visited, b) < 0) {
                Py_XDECREF(b);
                Py_CLEAR(visited);
                break;
            }
            Py_DECREF(b);
            pos += len + 1;
        }
    }
    free(w.visited);
    if (!visited)
        return NULL;
    return Py_BuildValue("(LN)", w.entries, visited);
}

/* ------------------------------------------------------------ listings made ahead of an incremental walk */

/* An incremental backup's walk is mostly metadata: one listing and one lstat per entry. The metadata
 * warmer (a forked process) read it all into the kernel's caches ahead of the walk on several threads, and
 * the walk then made every one of those system calls a second time, on the walking thread -- the serial
 * part of the backup (realtree's changed re-backup: ~0.2 s of its CPU in fstatat and getdents64 on cached
 * metadata). An Ahead makes the same listings on threads of this process, in the walk's order, and keeps
 * them: the walk takes a directory's listing from it instead of making it. No Python object is touched by
 * its threads (they never take the GIL); what they keep is bounded (max_held entries, the rest is listed
 * for the caches only and dropped), and what the walk has passed is dropped.
 *
 * Safety: a directory is opened beneath the root without following any symlink (warm_open), and a kept
 * listing is used only for the directory (st_dev, st_ino) that the walk's check names (list_dir): one
 * swapped meanwhile is listed again by the walk itself, which then says what it is. */

struct Kept {
    char *key; /* the directory below the root, '/' written as NUL (as WarmDir) */
    size_t len;
    dev_t dev;
    ino_t ino;
    Listing l;          /* (with cache_only: names only) */
    unsigned char *sub; /* sub[i]: entry i is a subdirectory to queue */
    int cache_only;     /* listed for the caches only: too big to keep (more than max_held entries) */
};
typedef struct Kept Kept;

#define AHEAD_MAX_THREADS 64

struct Ahead {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int rootfd, one_dev, stop, started, busy_n;
    dev_t dev;
    DirHeap pending;           /* directories to list */
    DirHeap listed;            /* directories listed ahead of the walk and not kept (no room): their keys */
    DirHeap kept;              /* listings made and not taken (each WarmDir's item: its Kept) */
    WarmDir busy[AHEAD_MAX_THREADS]; /* being listed by the threads */
    char *cursor;              /* the key the walk asked for last (NULL before its first) */
    size_t cursor_len, cursor_cap;
    long long held, max_held, peak_held, hits, misses, dropped;
    pthread_t tids[AHEAD_MAX_THREADS];
};

static int key_cmp(const char *a, size_t alen, const char *b, size_t blen) {
    size_t m = alen < blen ? alen : blen;
    int c = memcmp(a, b, m);
    return c ? c : (alen < blen ? -1 : alen > blen);
}

static void kept_free(Kept *k) {
    if (k) {
        free(k->key);
        free(k->sub);
        listing_free(&k->l);
        free(k);
    }
}

static int kept_push(Ahead *a, Kept *k) { /* (under mu) */
    return warm_push_item(&a->kept, k->key, k->len, k);
}

static Kept *kept_pop(Ahead *a) { /* (under mu, kept.n > 0) */
    Kept *top = warm_pop(&a->kept).item;
    a->held -= (long long)top->l.n;
    return top;
}

/* Whether the walk has reached key: it will not ask for it, or it has asked and lists it itself. (under mu) */
static int passed(const Ahead *a, const char *key, size_t len) {
    return a->cursor && key_cmp(key, len, a->cursor, a->cursor_len) <= 0;
}

/* Whether an entry lstat'ed is a subdirectory the walk enters (the device's only, with one_dev). */
static int is_subdir(const Ahead *a, const struct stat *st) {
    return S_ISDIR(st->st_mode) && (!a->one_dev || st->st_dev == a->dev);
}

/* Queue the subdirectories of a listing (sub[i]: entry i is one; NULL: from its lstats) below key. (under mu) */
static void push_subdirs(Ahead *a, const char *key, size_t len, const Listing *l, const unsigned char *sub) {
    if (len > 4000)
        return; /* (deeper directories are left to the walk, as the warmer's) */
    for (size_t i = 0; i < l->n; i++) {
        if (sub ? !sub[i] : (l->err[i] || !is_subdir(a, &l->st[i])))
            continue;
        const char *name = l->names + l->offsets[i];
        size_t nlen = strlen(name), clen = len + (len ? 1 : 0) + nlen;
        char *ck = malloc(clen + 1);
        if (!ck)
            return;
        memcpy(ck, key, len);
        if (len)
            ck[len] = 0;
        memcpy(ck + clen - nlen, name, nlen + 1);
        if (warm_push(&a->pending, ck, clen) < 0) {
            free(ck);
            return;
        }
    }
}

/* One directory listed as list_nogil lists it (names sorted, every entry lstat'ed), opened beneath the root.
 * One of more than max_held entries is only lstat'ed (for the caches, as the warmer did), its lstats not kept:
 * a directory of a million entries would otherwise hold ~150 MB of them on each thread listing one. */
static Kept *ahead_list(Ahead *a, WarmDir d) {
    Kept *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->key = d.key;
    k->len = d.len;
    int fd = warm_open(a->rootfd, &d), ok = 0;
    struct stat dst;
    if (fd >= 0 && fstat(fd, &dst) == 0 && read_names(fd, &k->l) == 0) {
        k->dev = dst.st_dev;
        k->ino = dst.st_ino;
        k->cache_only = (long long)k->l.n > a->max_held;
        ok = 1;
        if (k->l.n) {
            k->sub = calloc(k->l.n, 1);
            if (!k->cache_only) {
                k->l.st = malloc(k->l.n * sizeof *k->l.st);
                k->l.err = malloc(k->l.n * sizeof *k->l.err);
            }
            ok = k->sub && (k->cache_only || (k->l.st && k->l.err));
        }
        if (ok && k->l.n) {
            qsort_r(k->l.offsets, k->l.n, sizeof *k->l.offsets, by_name, k->l.names);
            if (k->cache_only) {
                for (size_t i = 0; i < k->l.n; i++) {
                    struct stat st;
                    k->sub[i] = fstatat(fd, k->l.names + k->l.offsets[i], &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                                is_subdir(a, &st);
                }
            } else {
                stat_entries(fd, &k->l, NULL, 0, 0);
                for (size_t i = 0; i < k->l.n; i++)
                    k->sub[i] = !k->l.err[i] && is_subdir(a, &k->l.st[i]);
            }
        }
    }
    if (fd >= 0)
        close(fd);
    if (!ok) { /* (the walk lists it itself and says why it could not) */
        k->key = NULL;
        kept_free(k);
        free(d.key);
        return NULL;
    }
    return k;
}

static void *ahead_worker(void *arg) {
    Ahead *a = arg;
    /* Behind the backup: these threads only take a core its own threads leave idle (a nice value is per
     * thread on Linux; raising it is always permitted). */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && !a->pending.n)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop)
            break;
        WarmDir d = warm_pop(&a->pending);
        if (passed(a, d.key, d.len)) { /* (the walk lists it itself, and queues what is below) */
            free(d.key);
            continue;
        }
        int slot = 0;
        while (a->busy[slot].key)
            slot++; /* (a free one: at most one per thread is taken) */
        a->busy[slot] = d;
        a->busy_n++;
        pthread_mutex_unlock(&a->mu);
        Kept *k = ahead_list(a, d);
        pthread_mutex_lock(&a->mu);
        a->busy[slot] = (WarmDir){NULL, 0};
        a->busy_n--;
        if (k) {
            push_subdirs(a, k->key, k->len, &k->l, k->sub);
            free(k->sub);
            k->sub = NULL;
            /* Kept while the walk has not reached it and fewer than max_held
             * entries are kept. Past that the threads go on listing for the kernel's caches only, as the
             * warmer did: the walk, one step behind, finds those metadata reads done, and a device that
             * takes long to answer is kept busy far enough ahead of it. */
            int ahead_of_walk = !passed(a, k->key, k->len);
            if (!a->stop && ahead_of_walk && !k->cache_only && a->held < a->max_held && kept_push(a, k) == 0) {
                a->held += (long long)k->l.n;
                if (a->held > a->peak_held)
                    a->peak_held = a->held;
            } else {
                a->dropped++;
                if (!a->stop && ahead_of_walk && warm_push(&a->listed, k->key, k->len) == 0)
                    k->key = NULL; /* (what is below it is queued: the walk, listing it itself, queues none) */
                kept_free(k);
            }
        }
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static int busy_with(const Ahead *a, const char *key, size_t len) { /* (under mu) */
    for (int i = 0; i < AHEAD_MAX_THREADS; i++)
        if (a->busy[i].key && !key_cmp(a->busy[i].key, a->busy[i].len, key, len))
            return 1;
    return 0;
}

/* The walk asks for the listing of key (walk order: keys only increase): AHEAD_TAKEN and *out filled (the
 * caller frees it) if one was kept and is of the directory (dev, ino) with check. Else the walk lists it
 * itself (then it also says what is there now, if it changed): AHEAD_LIST_AND_QUEUE if no thread has listed
 * it or is listing it (the walk queues its subdirectories for them: ahead_note), else AHEAD_LIST (they are
 * or will be queued). The walk does not wait for a thread that is listing it: on a busy machine that thread,
 * at nice 19, may wait long for a core (realtree, two cores: ~1,300 such waits, 0.24-0.30 s of a 0.75 s
 * re-backup), and where it waits on the device the walk's own listing waits for the same reads. */
static int ahead_take_locked(Ahead *a, const char *key, size_t len, int check, dev_t dev, ino_t ino,
                             Listing *out);

static int ahead_take(Ahead *a, const char *key, size_t len, int check, dev_t dev, ino_t ino, Listing *out) {
    pthread_mutex_lock(&a->mu);
    return ahead_take_locked(a, key, len, check, dev, ino, out);
}

/* ahead_take if the lock is free now, else AHEAD_BUSY (for a caller holding the GIL: see list_dir). */
static int ahead_try_take(Ahead *a, const char *key, size_t len, int check, dev_t dev, ino_t ino, Listing *out) {
    if (pthread_mutex_trylock(&a->mu) != 0)
        return AHEAD_BUSY;
    return ahead_take_locked(a, key, len, check, dev, ino, out);
}

/* (called with mu held; releases it) */
static int ahead_take_locked(Ahead *a, const char *key, size_t len, int check, dev_t dev, ino_t ino,
                             Listing *out) {
    if (a->stop) { /* (closed: what it kept is gone) */
        pthread_mutex_unlock(&a->mu);
        return AHEAD_LIST;
    }
    if (len + 1 > a->cursor_cap) {
        char *c = realloc(a->cursor, len + 1);
        if (!c) {
            pthread_mutex_unlock(&a->mu);
            return AHEAD_LIST; /* (the cursor stays behind: nothing is dropped too early) */
        }
        a->cursor = c;
        a->cursor_cap = len + 1;
    }
    memcpy(a->cursor, key, len + 1);
    a->cursor_len = len;
    while (a->kept.n && key_cmp(a->kept.heap[0].key, a->kept.heap[0].len, key, len) < 0)
        kept_free(kept_pop(a)); /* passed: the walk will not ask for it */
    while (a->listed.n && key_cmp(a->listed.heap[0].key, a->listed.heap[0].len, key, len) < 0)
        free(warm_pop(&a->listed).key);
    int found = AHEAD_LIST_AND_QUEUE;
    if (a->kept.n && !key_cmp(a->kept.heap[0].key, a->kept.heap[0].len, key, len)) {
        Kept *k = kept_pop(a);
        found = !check || (k->dev == dev && k->ino == ino) ? AHEAD_TAKEN : AHEAD_LIST;
        if (found == AHEAD_TAKEN) {
            *out = k->l;
            k->l = (Listing){0};
        }
        kept_free(k);
    } else if (a->listed.n && !key_cmp(a->listed.heap[0].key, a->listed.heap[0].len, key, len)) {
        free(warm_pop(&a->listed).key);
        found = AHEAD_LIST;
    } else if (busy_with(a, key, len))
        found = AHEAD_LIST;
    if (found == AHEAD_TAKEN)
        a->hits++;
    else
        a->misses++;
    pthread_mutex_unlock(&a->mu);
    return found;
}

/* The walk listed key itself: the threads go on below it. */
static void ahead_note(Ahead *a, const char *key, size_t len, const Listing *l) {
    pthread_mutex_lock(&a->mu);
    if (!a->stop && a->started) {
        push_subdirs(a, key, len, l, NULL);
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
}

static void ahead_stop(Ahead *a) {
    if (!a->started && a->rootfd < 0)
        return;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    for (int i = 0; i < a->started; i++)
        pthread_join(a->tids[i], NULL);
    Py_END_ALLOW_THREADS
    a->started = 0;
    pthread_mutex_lock(&a->mu); /* (a list_dir of another thread may look in meanwhile: it finds it stopped) */
    DirHeap *pools[] = {&a->pending, &a->listed};
    for (int i = 0; i < 2; i++) {
        while (pools[i]->n)
            free(warm_pop(pools[i]).key);
        free(pools[i]->heap);
        pools[i]->heap = NULL;
        pools[i]->cap = 0;
    }
    while (a->kept.n)
        kept_free(kept_pop(a));
    free(a->kept.heap);
    a->kept.heap = NULL;
    a->kept.cap = 0;
    free(a->cursor);
    a->cursor = NULL;
    a->cursor_len = a->cursor_cap = 0;
    if (a->rootfd >= 0)
        close(a->rootfd);
    a->rootfd = -1;
    pthread_mutex_unlock(&a->mu);
}

PyDoc_STRVAR(ahead_doc,
"Ahead(root, dev, threads=8, max_held=16384)\n"
"\n"
"Threads (at nice 19) that list and lstat the directories of the tree at ``root`` (bytes, followed) in the\n"
"walk's order, entering directories on device ``dev`` only (None: all), and keep about ``max_held`` entries\n"
"of those listings for list_dir(..., ahead=this) to take (see the comment above struct Ahead). ``close()``\n"
"stops them (the walk's end); ``stats()`` -> (hits, misses, dropped, peak_held): listings taken by the walk, made by it,\n"
"made ahead and not kept (no room, or passed by the walk), and the most entries kept at once.");

static PyObject *ahead_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"root", "dev", "threads", "max_held", NULL};
    const char *root;
    PyObject *dev;
    int threads = 8;
    long long max_held = 16384;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "yO|iL", kwlist, &root, &dev, &threads, &max_held))
        return NULL;
    Ahead *a = (Ahead *)type->tp_alloc(type, 0);
    if (!a)
        return NULL;
    a->rootfd = -1;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->max_held = max_held;
    if (dev != Py_None) {
        unsigned long long d = PyLong_AsUnsignedLongLong(dev);
        if (d == (unsigned long long)-1 && PyErr_Occurred()) {
            Py_DECREF(a);
            return NULL;
        }
        a->one_dev = 1;
        a->dev = (dev_t)d;
    }
    int fd;
    Py_BEGIN_ALLOW_THREADS
    fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    Py_END_ALLOW_THREADS
    if (fd < 0) {
        Py_DECREF(a);
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, root);
    }
    a->rootfd = fd;
    char *rk = calloc(1, 1);
    if (!rk || warm_push(&a->pending, rk, 0) < 0) {
        free(rk);
        Py_DECREF(a);
        return PyErr_NoMemory();
    }
    for (; a->started < threads && a->started < AHEAD_MAX_THREADS; a->started++)
        if (pthread_create(&a->tids[a->started], NULL, ahead_worker, a) != 0)
            break; /* (fewer threads, or none: the walk lists what is not kept) */
    return (PyObject *)a;
}

static void ahead_dealloc(Ahead *a) {
    ahead_stop(a);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

static PyObject *ahead_close(Ahead *a, PyObject *unused) {
    ahead_stop(a);
    Py_RETURN_NONE;
}

static PyObject *ahead_stats(Ahead *a, PyObject *unused) {
    long long hits, misses, dropped, peak;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&a->mu);
    hits = a->hits;
    misses = a->misses;
    dropped = a->dropped;
    peak = a->peak_held;
    pthread_mutex_unlock(&a->mu);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(LLLL)", hits, misses, dropped, peak);
}

static PyMethodDef ahead_methods[] = {
    {"close", (PyCFunction)ahead_close, METH_NOARGS, "Stop the threads and drop what is kept."},
    {"stats", (PyCFunction)ahead_stats, METH_NOARGS, "(hits, misses, dropped, peak_held)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject AheadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_listing.Ahead",
    .tp_basicsize = sizeof(Ahead),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = ahead_doc,
    .tp_new = ahead_new,
    .tp_dealloc = (destructor)ahead_dealloc,
    .tp_methods = ahead_methods,
};

PyDoc_STRVAR(lstat_doc, "lstat(path) -> os.stat_result built as list_dir builds its entries' (for the check).");

static PyObject *py_lstat(PyObject *self, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "y", &path))
        return NULL;
    struct stat st;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = lstat(path, &st);
    Py_END_ALLOW_THREADS
    if (r < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return stat_result(&st);
}

static PyMethodDef methods[] = {
    {"run_refs", py_run_refs, METH_VARARGS, run_refs_doc},
    {"run_cuts", py_run_cuts, METH_VARARGS, run_cuts_doc},
    {"list_dir", list_dir, METH_VARARGS, list_dir_doc},
    {"lstat", py_lstat, METH_VARARGS, lstat_doc},
    {"warm", py_warm, METH_VARARGS, warm_doc},
    {"reuse", py_reuse, METH_VARARGS, reuse_doc},
    {"keyed_records", py_keyed_records, METH_VARARGS, keyed_records_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_listing", "A directory's listing and lstats in one call without the GIL.", -1, methods,
};

PyMODINIT_FUNC PyInit__listing(void) {
    PyObject *os = PyImport_ImportModule("os");
    if (!os)
        return NULL;
    PyObject *t = PyObject_GetAttrString(os, "stat_result");
    Py_DECREF(os);
    if (!t)
        return NULL;
    PyObject *n_fields = PyType_Check(t) ? PyObject_GetAttrString(t, "n_fields") : NULL;
    long fields = n_fields ? PyLong_AsLong(n_fields) : -1;
    Py_XDECREF(n_fields);
    if (fields != 19) { /* the layout filled in stat_result() (Linux, CPython 3.11-3.13) */
        Py_DECREF(t);
        PyErr_Clear();
        PyErr_SetString(PyExc_ImportError, "os.stat_result has another layout here");
        return NULL;
    }
    stat_result_type = (PyTypeObject *)t; /* (kept for the life of the process) */
    PyObject *m = PyModule_Create(&module);
    if (m && (PyType_Ready(&AheadType) < 0 || PyModule_AddType(m, &AheadType) < 0 ||
              PyModule_AddIntConstant(m, "ABI", LISTING_ABI) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
