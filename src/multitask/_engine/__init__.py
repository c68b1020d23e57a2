"""The engine: the contract between multitask's front ends and its backends.

A *front end* turns a user's call into jobs and hands results back (``multitask.pool``: the
stdlib Pool API; the Executor will be a second one).  A *backend* owns the workers
(``multitask.backends``: processes on shared-memory rings, threads, Ray actors).  Both sides
meet here and nowhere else:

* :mod:`.jobs` -- :class:`~.jobs.Job` (one call, cut into :class:`~.jobs.Task` objects on
  demand), :class:`~.jobs.Redo` (tasks a dead worker never started) and
  :class:`~.jobs.JobOwner`, what a job reports to the front end that made it;
* :mod:`.backend` -- the :class:`~.backend.Backend` interface and :func:`~.backend.load_backend`;
* :mod:`.codes` -- task modes and outcome statuses, shared with the workers;
* :mod:`.stats` -- the statistics records (plain, frozen data);
* :mod:`.log` -- the ``"multitask"`` logger.

Layering (checked by ``tests/test_layers.py``): this package imports only ``multitask._core``
and the standard library; front ends and backends import it, never each other.  Nothing is
imported here, so that a worker importing :mod:`.codes` pays for nothing else.
"""
