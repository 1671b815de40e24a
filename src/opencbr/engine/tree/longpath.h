/* open(2) of a path of any length, for the tree engine's extensions (_listing.c, _reading.c).
 *
 * A path of PATH_MAX (4096) bytes or more fails with ENAMETOOLONG, but nothing limits how deep a tree
 * goes. Such a path is opened a piece at a time, each piece under PATH_MAX and cut at a '/', relative to
 * an O_PATH descriptor of the directory the piece before it named. Symlinks on the way are followed as
 * in the whole path: the callers check what they opened, as they do for a short path. A short path costs
 * nothing more (the plain open is made first). opencbr/system/longpaths.py does the same in Python. */
#ifndef OPENCBR_LONGPATH_H
#define OPENCBR_LONGPATH_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int open_long(const char *path, int flags) {
    int fd;
    do
        fd = open(path, flags);
    while (fd < 0 && errno == EINTR);
    if (fd >= 0 || errno != ENAMETOOLONG || strlen(path) < PATH_MAX)
        return fd;
    char *copy = strdup(path), *rest = copy;
    if (!copy) {
        errno = ENOMEM;
        return -1;
    }
    int dir = AT_FDCWD;
    fd = -1;
    while (strlen(rest) >= PATH_MAX) {
        char *cut = NULL;
        for (char *c = rest + PATH_MAX - 2; c > rest; c--)
            if (*c == '/') {
                cut = c;
                break;
            }
        if (!cut) { /* (no file system takes a name that long) */
            errno = ENAMETOOLONG;
            goto out;
        }
        *cut = 0;
        int next;
        do
            next = openat(dir, rest, O_PATH | O_DIRECTORY | O_CLOEXEC);
        while (next < 0 && errno == EINTR);
        int err = errno;
        if (dir >= 0)
            close(dir);
        errno = err;
        dir = next;
        if (dir < 0)
            goto out;
        rest = cut + 1;
    }
    do
        fd = openat(dir, rest, flags);
    while (fd < 0 && errno == EINTR);
out:;
    int err = errno;
    if (dir >= 0)
        close(dir);
    free(copy);
    errno = err;
    return fd;
}

#endif
