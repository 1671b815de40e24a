/* How the tree engine's extensions (_listing.c, _reading.c) open what a walk names.
 *
 * open_beneath: a path relative to the tree's root, no symlink followed anywhere on the way and nothing
 * outside the root reached (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, else one O_NOFOLLOW openat per
 * component): what the walk listed may be swapped meanwhile by whoever writes in the tree, and opening is
 * itself an action -- a device node's driver acts on open (a watchdog arms, a tape rewinds) -- so a
 * file's open must not be led out of the tree, not merely be checked afterwards. A path of PATH_MAX (4096)
 * bytes or more, which openat2 refuses (ENAMETOOLONG) though nothing limits how deep a tree goes, is opened
 * one component at a time. opencbr/system/beneath.py does the same in Python. */
#ifndef OPENCBR_OPENING_H
#define OPENCBR_OPENING_H

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

/* openat(dir, name, flags), EINTR retried, then `dir` closed unless it is `keep` (errno kept): one step of a
 * walk down by descriptors. */
static inline int step_into(int dir, int keep, const char *name, int flags) {
    int next;
    do
        next = openat(dir, name, flags);
    while (next < 0 && errno == EINTR);
    if (dir >= 0 && dir != keep) {
        int err = errno;
        close(dir);
        errno = err;
    }
    return next;
}

/* ".." as a component would leave the directory it is looked up in (RESOLVE_BENEATH refuses it too):
 * `dir` closed unless it is `keep`, EXDEV. */
static inline int refuse_up(int dir, int keep) {
    if (dir >= 0 && dir != keep)
        close(dir);
    errno = EXDEV;
    return -1;
}

/* One openat per component, O_NOFOLLOW each (a directory on the way with O_DIRECTORY too): a symlink
 * anywhere fails (ENOTDIR on the way, ELOOP last), ".." fails (EXDEV), and a path of any length works. */
static inline int open_by_components(int rootfd, const char *rel, int flags) {
    char *copy = strdup(rel), *part = copy, *slash;
    if (!copy) {
        errno = ENOMEM;
        return -1;
    }
    int dir = rootfd;
    while (dir != -1 && (slash = strchr(part, '/'))) {
        *slash = 0;
        dir = strcmp(part, "..") ? step_into(dir, rootfd, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                                 : refuse_up(dir, rootfd);
        part = slash + 1;
    }
    if (dir != -1 && !strcmp(part, ".."))
        dir = refuse_up(dir, rootfd);
    int fd = dir == -1 ? -1 : step_into(dir, rootfd, part, flags | O_NOFOLLOW | O_CLOEXEC);
    int err = errno;
    free(copy);
    errno = err;
    return fd;
}

/* 0: not known yet; 1: openat2 works; 2: it does not (Linux before 5.6, or a seccomp filter refusing it).
 * (Threads may race to set it: each sets the same value.) */
static int beneath_openat2 = 0;

static inline int open_beneath(int rootfd, const char *rel, int flags) {
    if (beneath_openat2 != 2) {
        struct open_how how = {.flags = (unsigned long long)(flags | O_NOFOLLOW | O_CLOEXEC),
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
        int fd;
        do
            fd = (int)syscall(SYS_openat2, rootfd, rel, &how, sizeof how);
        while (fd < 0 && errno == EINTR);
        if (fd >= 0 || errno == ENAMETOOLONG || beneath_openat2 == 1 || (errno != ENOSYS && errno != EPERM)) {
            if (fd >= 0)
                beneath_openat2 = 1;
            return fd >= 0 || errno != ENAMETOOLONG ? fd : open_by_components(rootfd, rel, flags);
        }
        /* ENOSYS, or EPERM: no openat2, or O_NOATIME on a file not ours? asked once */
        int err = errno;
        struct open_how probe = {.flags = O_PATH | O_CLOEXEC};
        int pfd = (int)syscall(SYS_openat2, rootfd, ".", &probe, sizeof probe);
        if (pfd >= 0) {
            close(pfd);
            beneath_openat2 = 1;
            errno = err;
            return -1;
        }
        beneath_openat2 = 2;
    }
    return open_by_components(rootfd, rel, flags);
}

#endif
