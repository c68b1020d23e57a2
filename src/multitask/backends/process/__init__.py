"""The default backend: worker processes fed through shared-memory rings.

Data flow of one task, from ``backend.submit(job)`` (what comes before it is in
``multitask.pool``'s docstring; ``docs/design.md`` points here)::

    caller thread                     worker process              reader of the result ring
    -------------                     --------------              -------------------------
    apply_async(f, args)
      args serialized now (errors raise here; a map's chunks: in _flush, below)
      Job -> _pending; _dispatch() under _lock (_dispatch.py):
        the live worker with the least estimated work queued
        task appended to worker.inflight, its messages to worker.backlog
      _flush() after _lock, under worker.send_lock:
        [F msg once per worker], T msg --> worker's inbound ring
                                               get_many() -> slot := task
                                               run f, serialize result
                                               R msg --> result ring --> _lead_get / _follow_get
                                                                           pop worker.inflight
                                                                           _dispatch() more
                                                                           job.task_done()
                                                                           -> AsyncResult._set

The reader of the result ring is the caller itself while it is blocked in ``get()``/``next()``
(the *leader*, see :meth:`ProcessBackend.lead`), else the *result thread* (the follower).  A
reader gate in the ring object decides who may take messages, so they are settled one batch at
a time, in ring order, by one thread; a caller's own result thus needs no thread hand-off.

The parent always knows which worker holds which task (``worker.inflight``, in the order they
were sent; results come back in that order).  When a worker dies, its zygote reports the exit
(or, for the first worker under fork -- forked by this process, see ``start`` -- its pidfd
fires and the watcher reaps it); the watcher thread posts a ``D`` message into the result ring
*after* everything the worker flushed, and the reader settles its inflight tasks exactly: tasks
whose result arrived are done; the task in the worker's slot -- the one it was running -- fails with
:class:`WorkerDiedError` (or :class:`TaskTimeoutError` if the watcher killed it for overrunning
``task_timeout``); tasks after it were never started and are given to another worker.  Then the
slot gets a fresh worker from the zygote.

Threads in the parent: the *result thread* (follows: reads when no caller leads, settles tasks,
dispatches) and the *watcher thread* (blocks in ``select`` on the zygote's reports and on its
own worker's pidfd, enforces timeouts).  Rings are polled briefly before a reader sleeps
(``Ring.spin_ns``), so a round trip costs no futex wake-up when both sides are quick.
"""

from ._backend import BACKEND, ProcessBackend

__all__ = ["BACKEND", "ProcessBackend"]
