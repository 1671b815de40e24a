"""The process entry points, in one place: what ``cbr serve``, ``cbr worker`` and ``cbr scheduler`` run.

- :mod:`.serve`: the service (API, console and scheduler in one process, worker processes beside it);
- :mod:`.worker`: workers only (a worker process of ``serve``, or more workers on another machine);
- :mod:`.scheduler`: the scheduler alone (another machine sharing the catalog);
- :mod:`.process`: what every one of them does the same way (logging, stop signals, opening the catalog).

The ``cbr`` commands are thin callers of these; nothing here prints for a user.
"""
