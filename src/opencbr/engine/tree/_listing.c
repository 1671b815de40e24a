/* A directory's listing in one call, without the GIL (optional: walker.py falls back to os.scandir).
 *
 * The walking thread of a tree backup lists every directory. In Python a listing is ~10 system calls per
 * directory plus one lstat per entry, and each call gives up the GIL and waits to get it back behind the
 * backup's reader and catalog threads (50-70 us a hand-off instead of ~4 us: bench/README.md, realtree).
 * list_dir() makes all of a directory's system calls with the GIL released -- open, fstat, getdents64,
 * one fstatat per entry, the optional readahead of small files -- and then builds the entries with it:
 * one hand-off per directory.
 *
 * The safety is walker.py's: the directory is opened by its path with O_NOFOLLOW (the root: may be a
 * /proc/self/fd link, followed) and O_DIRECTORY, and it is listed only if its (st_dev, st_ino) are the ones
 * its parent's listing saw; every entry is then stat'ed, and read ahead, relative to that descriptor
 * (fstatat, openat with O_NOFOLLOW): nothing outside the directory checked is ever touched.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* walker.py checks this: a .so left from another version of this file is not used (the fallback is). */
#define LISTING_ABI 2

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
static int list_nogil(const char *path, int follow, int check, dev_t want_dev, ino_t want_ino,
                      const char *const *excluded, Py_ssize_t n_excluded, long long readahead_below,
                      Listing *l, int *error) {
    int fd;
    do
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    while (fd < 0 && errno == EINTR);
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
static PyObject *build(const Listing *l, const char *prefix, Py_ssize_t plen, const char *apfx, Py_ssize_t alen) {
    PyObject *entries = PyList_New(0), *problems = PyList_New(0);
    long long regular = 0;
    if (!entries || !problems)
        goto fail;
    for (size_t i = 0; i < l->n; i++) {
        if (l->err[i] < 0)
            continue;
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
    return Py_BuildValue("(iNNL)", LIST_OK, entries, problems, regular);
fail:
    Py_XDECREF(entries);
    Py_XDECREF(problems);
    return NULL;
}

PyDoc_STRVAR(list_dir_doc,
"list_dir(path, follow, want, prefix, apfx, excluded, readahead_below)\n"
"\n"
"List the directory ``path`` (bytes; ``follow``: False opens it with O_NOFOLLOW) if its (st_dev, st_ino)\n"
"are ``want`` (None: any), stat'ing every entry but the names in ``excluded`` (a tuple of bytes)\n"
"relative to it, and starting the read of regular files smaller than ``readahead_below`` (0: none).\n"
"Returns (0, entries, problems, regular_bytes): entries (prefix+name, apfx+name, os.stat_result, None)\n"
"sorted by name, problems (prefix+name, errno) of entries whose lstat failed, and the regular files'\n"
"total size; or (1, errno, None, 0) when the open failed, (2, 0, None, 0) when it is another directory,\n"
"(3, errno, None, 0) when the listing failed.");

static PyObject *list_dir(PyObject *self, PyObject *args) {
    const char *path, *prefix, *apfx;
    Py_ssize_t path_len, plen, alen;
    int follow;
    PyObject *want, *excluded_names;
    long long readahead_below;
    if (!PyArg_ParseTuple(args, "y#pOy#y#O!L", &path, &path_len, &follow, &want, &prefix, &plen, &apfx, &alen,
                          &PyTuple_Type, &excluded_names, &readahead_below))
        return NULL;
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
    Py_BEGIN_ALLOW_THREADS
    status = list_nogil(path, follow, check, (dev_t)want_dev, (ino_t)want_ino, excluded, n_excluded,
                        readahead_below, &l, &error);
    Py_END_ALLOW_THREADS
    PyMem_Free(excluded);
    PyObject *out;
    if (status == LIST_OK)
        out = build(&l, prefix, plen, apfx, alen);
    else
        out = Py_BuildValue("(iiOi)", status, error, Py_None, 0);
    listing_free(&l);
    return out;
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

PyDoc_STRVAR(warm_doc,
"warm(root, dev, record=False) -> (entries, visited)\n"
"\n"
"lstat every entry of the tree at ``root`` (bytes, followed) in the walk's order, entering directories on\n"
"device ``dev`` only (None: all), without the GIL and without building any Python object: the metadata\n"
"warmer's walk (walker.MetadataWarmer). ``entries``: how many were stat'ed; ``visited`` (with ``record``):\n"
"the directories listed, by path below the root, in order (else None).");

static PyObject *py_warm(PyObject *self, PyObject *args) {
    const char *root;
    PyObject *dev;
    int record = 0;
    if (!PyArg_ParseTuple(args, "yO|p", &root, &dev, &record))
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
    if (fd >= 0)
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
    {"list_dir", list_dir, METH_VARARGS, list_dir_doc},
    {"lstat", py_lstat, METH_VARARGS, lstat_doc},
    {"warm", py_warm, METH_VARARGS, warm_doc},
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
    if (m && PyModule_AddIntConstant(m, "ABI", LISTING_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
