"""Operating-system helpers several layers need (docs/design.md): the C library loaded once
(``libc``), processes (``processes``: the parent-death signal, whether a recorded pid still lives) and
page-aligned direct-I/O buffers (``aligned``), opening paths below a directory without following symlinks
(``beneath``). The bottom of the layers: imports nothing of ours."""
