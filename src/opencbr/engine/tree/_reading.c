/* A batch of small files read in one call, without the GIL (optional: sources.py falls back to Python).
 *
 * A first backup reads every small file (most of a real tree's files: median ~3 KB) to bundle it. In Python
 * each file is five system calls -- open, fstat, read, flistxattr, close -- and each gives up the GIL and
 * waits to get it back behind the other readers and the walking thread. read_small() makes every system
 * call of a batch with the GIL released and takes the GIL back once, to build the results.
 *
 * The checks are chunker.py's FileChunker.read_file and xattrs.py's, one for one (sources.py turns the
 * codes returned here into the same FileData, warnings and FileUnreadable messages): open below the tree's
 * root with no symlink followed (opening.h: open_beneath; O_NOATIME, without it where refused; a symlink on
 * the way is a replaced file), fstat and the same regular file (st_dev, st_ino) the
 * walk saw, one read of up to `limit` bytes (finished where a read came short of the size), the xattrs
 * through the descriptor, the size and mtime against the walk's. A file that is no longer small when read is
 * left to the Python reader (None), which stores it as chunks of its own.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>
#include "opening.h"

/* sources.py checks this: a .so left from another version of this file is not used (the fallback is). */
#define READING_ABI 4

/* How a file's read ended (the first item of a failure's tuple; sources.py words them). */
enum { READ_OK = 0, READ_VANISHED = 1, READ_OPEN_FAILED = 2, READ_REPLACED = 3, READ_FAILED = 4, READ_NOT_SMALL = 5 };
/* A read file's warning (sources.py words them). */
enum { W_NONE = 0, W_SIZE_CHANGED = 1, W_CHANGED = 2 };

#define LIST_FIRST 256        /* os.listxattr's first buffer, then XATTR_LIST_MAX */
#define LIST_MAX 65536
#define VALUE_MAX 65536       /* XATTR_SIZE_MAX: os.getxattr's largest buffer */

typedef struct {
    /* in (copied with the GIL) */
    const char *path;         /* relative to the tree's root */
    dev_t dev;
    ino_t ino;
    long long size, mtime_ns;
    /* out */
    int status, err, warning;
    int has_data;             /* read (an empty file is not: its data is None) */
    size_t off, len;          /* the content: arena[off:off+len] */
    int list_err;             /* flistxattr's errno (EOPNOTSUPP/ENODATA already mapped to none) */
    char *names;              /* NUL-separated xattr names (malloc'ed), n_names of them */
    size_t names_len;
    int n_names;
    char **values;            /* values[i] (malloc'ed) of value_len[i] bytes, or NULL and value_err[i] */
    ssize_t *value_len;
    int *value_err;
    unsigned long crc;
} File;

typedef struct {
    char *buf;
    size_t len, cap;
} Arena;

static int arena_room(Arena *a, size_t need) {
    if (a->len + need <= a->cap)
        return 0;
    size_t cap = a->cap ? a->cap : (1 << 20);
    while (cap < a->len + need)
        cap *= 2;
    char *p = realloc(a->buf, cap);
    if (!p)
        return -1;
    a->buf = p;
    a->cap = cap;
    return 0;
}

static int open_noatime(int rootfd, const char *path) {
    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
    int fd = open_beneath(rootfd, path, flags | O_NOATIME);
    if (fd < 0 && (errno == EPERM || errno == EACCES)) /* (Python's PermissionError: chunker.open_noatime) */
        fd = open_beneath(rootfd, path, flags);
    return fd;
}

/* Up to `limit` bytes into the arena, as FileChunker._read: one read of `limit`, then more while short of
 * `size`. Returns the length, or -1 with errno. */
static ssize_t read_content(int fd, Arena *a, long long size, long long limit) {
    char *at = a->buf + a->len;
    ssize_t got;
    do
        got = read(fd, at, (size_t)limit);
    while (got < 0 && errno == EINTR);
    if (got < 0)
        return -1;
    while (got < size && got < limit) {
        ssize_t more = read(fd, at + got, (size_t)(limit - got));
        if (more < 0 && errno == EINTR)
            continue;
        if (more < 0)
            return -1;
        if (more == 0)
            break;
        got += more;
    }
    return got;
}

static ssize_t list_names(int fd, const char *path, char *list, size_t size) {
    return path ? listxattr(path, list, size) : flistxattr(fd, list, size);
}

/* The file's xattrs as xattrs.read_xattrs reads them by descriptor (names in listing order: sorted in
 * Python, by the names as str, as read_xattrs sorts them); through `path` instead when it is not NULL (an
 * O_PATH descriptor's /proc/self/fd/N, which f*xattr refuse). Returns 0, or -1 when out of memory. */
static int read_xattrs(int fd, const char *path, File *f) {
    char small[LIST_FIRST];
    char *list = small;
    ssize_t n = list_names(fd, path, small, sizeof small);
    if (n < 0 && errno == ERANGE) {
        list = malloc(LIST_MAX);
        if (!list)
            return -1;
        n = list_names(fd, path, list, LIST_MAX);
    }
    if (n <= 0) {
        f->list_err = n < 0 && errno != EOPNOTSUPP && errno != ENODATA ? errno : 0;
        if (list != small)
            free(list);
        return 0;
    }
    f->names = malloc((size_t)n);
    if (!f->names)
        goto oom;
    memcpy(f->names, list, (size_t)n);
    f->names_len = (size_t)n;
    for (ssize_t i = 0; i < n; i++)
        f->n_names += list[i] == 0;
    f->values = calloc((size_t)f->n_names, sizeof *f->values);
    f->value_len = calloc((size_t)f->n_names, sizeof *f->value_len);
    f->value_err = calloc((size_t)f->n_names, sizeof *f->value_err);
    if (!f->values || !f->value_len || !f->value_err)
        goto oom;
    const char *name = f->names;
    for (int i = 0; i < f->n_names; i++, name += strlen(name) + 1) {
        char *v = malloc(VALUE_MAX);
        if (!v)
            goto oom;
        ssize_t vl = path ? getxattr(path, name, v, VALUE_MAX) : fgetxattr(fd, name, v, VALUE_MAX);
        if (vl < 0) {
            f->value_err[i] = errno;
            free(v);
        } else { /* (kept at its size: a batch of files with many xattrs holds them all until built) */
            char *fit = realloc(v, vl ? (size_t)vl : 1);
            f->values[i] = fit ? fit : v;
            f->value_len[i] = vl;
        }
    }
    if (list != small)
        free(list);
    return 0;
oom:
    if (list != small)
        free(list);
    return -1;
}

/* The GIL-free part for one file. Returns 0, or -1 when out of memory. */
static int read_one(int rootfd, File *f, Arena *a, long long limit) {
    int fd = open_noatime(rootfd, f->path);
    if (fd < 0) {
        /* (a symlink on the way, or the file one now: what the walk saw was replaced, as chunker.py says) */
        f->status = errno == ENOENT ? READ_VANISHED
                    : errno == ELOOP || errno == EXDEV || errno == ENOTDIR ? READ_REPLACED : READ_OPEN_FAILED;
        f->err = errno;
        return 0;
    }
    struct stat fst;
    int rc = 0;
    if (fstat(fd, &fst) < 0 || !S_ISREG(fst.st_mode) || fst.st_dev != f->dev || fst.st_ino != f->ino) {
        f->status = READ_REPLACED; /* (an fstat that fails: chunker.py raises the OSError; never seen) */
        goto out;
    }
    if ((long long)fst.st_size >= limit) {
        f->status = READ_NOT_SMALL;
        goto out;
    }
    if (fst.st_size > 0) {
        if (arena_room(a, (size_t)limit) < 0) {
            rc = -1;
            goto out;
        }
        ssize_t got = read_content(fd, a, fst.st_size, limit);
        if (got < 0) {
            f->status = READ_FAILED;
            f->err = errno;
            goto out;
        }
        if (got >= limit) {
            f->status = READ_NOT_SMALL; /* it grew past the limit: stored on its own */
            goto out;
        }
        f->has_data = 1;
        f->off = a->len;
        f->len = (size_t)got;
        a->len += (size_t)got;
        f->crc = crc32(0L, (const Bytef *)a->buf + f->off, (uInt)got);
        if ((long long)got != (long long)fst.st_size)
            f->warning = W_SIZE_CHANGED;
    }
    if (read_xattrs(fd, NULL, f) < 0) {
        rc = -1;
        goto out;
    }
    /* An empty file was not read: its size and mtime are checked after the xattrs, as chunker.py does. */
    if (fst.st_size == 0 && fstat(fd, &fst) < 0) {
        f->status = READ_FAILED;
        f->err = errno;
        goto out;
    }
    long long mtime_ns = (long long)fst.st_mtim.tv_sec * 1000000000LL + fst.st_mtim.tv_nsec;
    if (f->warning == W_NONE && (mtime_ns != f->mtime_ns || (long long)fst.st_size != f->size))
        f->warning = W_CHANGED;
out:
    close(fd);
    return rc;
}

static void file_free(File *f) {
    for (int i = 0; f->values && i < f->n_names; i++)
        free(f->values[i]);
    free(f->values);
    free(f->value_len);
    free(f->value_err);
    free(f->names);
}

/* (name, value) or (name, errno) pairs, or an int (flistxattr's errno), or None (no xattrs). */
static PyObject *xattrs_result(const File *f) {
    if (f->list_err)
        return PyLong_FromLong(f->list_err);
    if (!f->n_names)
        Py_RETURN_NONE;
    PyObject *out = PyList_New(f->n_names);
    if (!out)
        return NULL;
    const char *name = f->names;
    for (int i = 0; i < f->n_names; i++, name += strlen(name) + 1) {
        PyObject *v = f->values[i] ? PyBytes_FromStringAndSize(f->values[i], f->value_len[i])
                                   : PyLong_FromLong(f->value_err[i]);
        PyObject *pair = v ? Py_BuildValue("(y#N)", name, (Py_ssize_t)strlen(name), v) : NULL;
        if (!pair) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, pair);
    }
    return out;
}

/* One file's result: (data or None, crc, warning, xattrs) once read; (status, errno) when it was not; None
 * when it is not small any more. */
static PyObject *file_result(const File *f, const Arena *a) {
    if (f->status == READ_NOT_SMALL)
        Py_RETURN_NONE;
    if (f->status != READ_OK)
        return Py_BuildValue("(ii)", f->status, f->err);
    PyObject *x = xattrs_result(f);
    if (!x)
        return NULL;
    if (!f->has_data)
        return Py_BuildValue("(OiiN)", Py_None, 0, f->warning, x);
    return Py_BuildValue("(y#kiN)", a->buf + f->off, (Py_ssize_t)f->len, f->crc, f->warning, x);
}

static long long attr_ll(PyObject *o, const char *name) {
    PyObject *v = PyObject_GetAttrString(o, name);
    if (!v)
        return -1;
    long long r = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return r;
}

/* (st_dev and st_ino are unsigned: an inode number may use all 64 bits) */
static unsigned long long attr_ull(PyObject *o, const char *name) {
    PyObject *v = PyObject_GetAttrString(o, name);
    if (!v)
        return (unsigned long long)-1;
    unsigned long long r = PyLong_AsUnsignedLongLong(v);
    Py_DECREF(v);
    return r;
}

PyDoc_STRVAR(read_small_doc,
"read_small(items, limit, root_fd) -> list: each item (with .path below root_fd and the walk's .st)\n"
"read as sources.py's DirectorySource.read_small describes: (data or None, crc32, warning, xattrs), (status, errno), or None.");

static PyObject *read_small(PyObject *self, PyObject *args) {
    PyObject *items;
    long long limit;
    int rootfd;
    if (!PyArg_ParseTuple(args, "O!Li", &PyList_Type, &items, &limit, &rootfd))
        return NULL;
    if (limit <= 0) {
        PyErr_SetString(PyExc_ValueError, "limit must be positive");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(items);
    File *files = calloc((size_t)(n ? n : 1), sizeof *files);
    PyObject **paths = calloc((size_t)(n ? n : 1), sizeof *paths); /* (kept alive while read) */
    PyObject *out = NULL;
    Arena arena = {0};
    if (!files || !paths) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i), *st;
        paths[i] = PyObject_GetAttrString(item, "path");
        if (!paths[i] || !PyBytes_Check(paths[i]) || !PyBytes_GET_SIZE(paths[i])) {
            if (paths[i])
                PyErr_SetString(PyExc_TypeError, "path must be bytes (a file below the root)");
            goto done;
        }
        if (!(st = PyObject_GetAttrString(item, "st")))
            goto done;
        File *f = &files[i];
        f->path = PyBytes_AS_STRING(paths[i]);
        f->dev = (dev_t)attr_ull(st, "st_dev");
        f->ino = (ino_t)attr_ull(st, "st_ino");
        f->size = attr_ll(st, "st_size");
        f->mtime_ns = attr_ll(st, "st_mtime_ns");
        Py_DECREF(st);
        if (PyErr_Occurred())
            goto done;
    }
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !oom; i++)
        oom = read_one(rootfd, &files[i], &arena, limit) < 0;
    Py_END_ALLOW_THREADS
    if (oom) {
        PyErr_NoMemory();
        goto done;
    }
    if (!(out = PyList_New(n)))
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = file_result(&files[i], &arena);
        if (!r) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, r);
    }
done:
    for (Py_ssize_t i = 0; files && paths && i < n; i++) {
        Py_XDECREF(paths[i]);
        file_free(&files[i]);
    }
    free(files);
    free(paths);
    free(arena.buf);
    return out;
}

PyDoc_STRVAR(dir_xattrs_doc,
"dir_xattrs(root_fd, path, dev, ino) -> (status, errno, xattrs): the xattrs of the directory at path (below\n"
"root_fd, not empty), read through a descriptor of it opened below the root with no symlink followed and checked\n"
"to be the directory the walk saw (dev, ino). status 0: xattrs as read_small gives them; else a read_small\n"
"failure code (vanished, open failed, replaced) and its errno.");

/* A changed directory's xattrs (an incremental backup records them anew; unchanged ones keep the parent's
 * record), on the walking thread. In Python that was an open below the root, a listxattr by /proc/self/fd
 * path, its getxattrs and a close, each giving up the GIL and waiting to get it back behind the readers:
 * 85-90 us a directory, ~0.1 s of realtree's changed re-backup (1,254 changed directories). Here it is one
 * call that keeps the GIL: on a directory the walk has just listed these system calls take microseconds
 * (its inode is cached), and giving the GIL up for them still cost a wait to get it back (36-49 us a
 * directory with it released, 7.5-9 us kept). */
static PyObject *dir_xattrs(PyObject *self, PyObject *args) {
    int rootfd;
    const char *path;
    Py_ssize_t plen;
    unsigned long long dev, ino;
    if (!PyArg_ParseTuple(args, "iy#KK", &rootfd, &path, &plen, &dev, &ino))
        return NULL;
    if (!plen || strlen(path) != (size_t)plen) {
        PyErr_SetString(PyExc_ValueError, "path must name a directory below the root");
        return NULL;
    }
    File f = {0};
    int oom = 0;
    int fd = open_beneath(rootfd, path, O_RDONLY | O_DIRECTORY | O_NONBLOCK);
    int by_path = fd < 0 && errno == EACCES; /* (searchable, not readable: its xattrs still are, by path) */
    if (by_path)
        fd = open_beneath(rootfd, path, O_PATH | O_DIRECTORY);
    struct stat st;
    if (fd < 0) {
        f.err = errno;
        f.status = errno == ENOENT ? READ_VANISHED
                   : errno == ELOOP || errno == EXDEV || errno == ENOTDIR ? READ_REPLACED : READ_OPEN_FAILED;
    } else if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode) || (unsigned long long)st.st_dev != dev ||
               (unsigned long long)st.st_ino != ino) {
        f.status = READ_REPLACED;
        f.err = ESTALE;
    } else if (by_path) {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        oom = read_xattrs(fd, proc, &f) < 0;
    } else {
        oom = read_xattrs(fd, NULL, &f) < 0;
    }
    if (fd >= 0)
        close(fd);
    PyObject *out = NULL;
    if (oom)
        PyErr_NoMemory();
    else if (f.status != READ_OK)
        out = Py_BuildValue("(iiO)", f.status, f.err, Py_None);
    else {
        PyObject *x = xattrs_result(&f);
        out = x ? Py_BuildValue("(iiN)", READ_OK, 0, x) : NULL;
    }
    file_free(&f);
    return out;
}

static PyMethodDef methods[] = {
    {"read_small", read_small, METH_VARARGS, read_small_doc},
    {"dir_xattrs", dir_xattrs, METH_VARARGS, dir_xattrs_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_reading", "A batch of small files read in one call without the GIL.", -1, methods,
};

PyMODINIT_FUNC PyInit__reading(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "ABI", READING_ABI) < 0)
        Py_CLEAR(m);
    return m;
}
