"""The Ray backend: the Pool API on Ray actors, on this machine or a cluster.

``Pool(backend="ray")`` -- or ``MULTITASK_BACKEND=ray`` for an unchanged program -- runs every
task in one of ``processes`` Ray actors.  Where Ray is:

* ``Pool(..., ray_address="ray://host:10001" | "host:6379" | "auto")``, else
* the environment variable ``RAY_ADDRESS`` (Ray's own convention), else
* a Ray this process already initialised (``ray.init(...)`` before the pool), else
* a local Ray started with ``ray.init(num_cpus=max(processes, cpu_count()),
  include_dashboard=False)`` and shut down when the last pool that started it is joined or
  terminated.

Data flow of one task::

    caller thread                         Ray actor i                 Ray's callback thread
    -------------                         -----------                 ---------------------
    apply_async(f, args)
      large ndarrays -> ray.put (once)
      Job -> _pending; _dispatch():
        the actor with the fewest tasks,
        at most 2 in flight (1 if the one
        it runs looks slow)
        actor.run.remote(fid, f?, mode, data) -> run f -> (status, value, t0, t1)
        call appended to actor.inflight                     ref resolves -> future callback
                                                                         -> event queue
    result thread: takes events in completion order, settles calls in each actor's order,
      dispatches more, then job.task_done() -> AsyncResult._set (callbacks run here)

Dispatch is load-balanced (``ray.util.multiprocessing.Pool`` hands chunks out round-robin, so a
slow chunk holds up everything queued behind it, ray-project/ray#29466): a task goes to the idle
actor, and a second one is queued on a busy actor only when tasks are cheap (< 20 ms measured)
and its current one is not overdue, so a slow task never holds a fast one behind it for long.
Results come from ``ObjectRef.future()`` callbacks -- event-driven, not a 100 ms poll (Ray's
Pool, ray-project/ray#21343): ``ray.wait`` in a loop cannot be woken when a new task is
submitted, so it would need exactly such a poll.

Differences from the process backend:

* functions and arguments are serialized by Ray (cloudpickle); a function is sent once per
  actor and cached there.  Functions importable by name are sent by reference, so the module
  must be importable on every node (install your package there, or use Ray's
  ``runtime_env``); ``__main__`` functions, lambdas and closures go by value;
* NumPy arrays of 1 MiB or more in a task's arguments are ``ray.put`` into Ray's object store
  once, when the call is made (a later change to the array does not reach the task, as with the
  process backend), and the actor gets a zero-copy **read-only** view; large results come back
  the same way, so a large array returned by a task is read-only (``arr.copy()`` to write);
* the initializer runs once per actor, in the actor's process, so globals it sets are seen by
  the tasks of that actor (``ray.util.multiprocessing.Pool`` does not support this,
  ray-project/ray#29453); a failing initializer fails the pool with
  :class:`multitask.ProcessError` as in the process backend;
* an actor that dies (``os._exit``, a segfault, OOM, its node lost: Ray reports
  ``RayActorError``) fails exactly the task it was running with
  :class:`multitask.WorkerDiedError` (``.pid`` is the actor's pid; ``.exitcode`` is None, Ray
  does not report it); the task queued behind it, never started, goes to another actor; the
  actor is replaced and the pool goes on (Ray's Pool does not replace, ray-project/ray#37705);
* ``task_timeout`` is measured from when the actor started the task, as seen from here (the
  completion of the task before it, or the dispatch); an overdue task's actor is killed with
  ``ray.kill``, its result raises :class:`multitask.TaskTimeoutError`, the actor is replaced;
* an actor Ray has not *created* 20 s after it was asked for (seen on a 2-core machine right
  after other actors were killed: "starting" for ever, with the calls queued on it) is killed
  and replaced, its queued calls sent again, with a warning on the ``"multitask"`` logger; the
  initializer's own time does not count;
* stopping a pool waits (at most 10 s) until Ray is done with its killed actors -- an unborn
  one's first call has failed, a local one's process has exited -- so that the next pool's
  actors are not placed while these are torn down (the race that leaves one never created);
* a result that Ray cannot serialize raises :class:`multitask.SerializationError`;
* ``nice``/``cpu_affinity`` are applied in each actor process (on its node);
* statistics: ``pid`` is the actor's process id on its node; ``queued`` tasks wait here, not
  on the cluster.

Stays local (works only between processes on one machine, not across Ray nodes):
``Value``/``Array``/``RawValue``/``RawArray``, ``shared_array``, ``Lock``/``Semaphore``/``Event``
and the other synchronisation primitives, ``Pipe``, and ``multitask.Queue`` (a shared-memory
ring).  A ring ``Queue`` *does* work between the driver and actors on the driver's node (the
actor attaches to it through ``/proc``); across nodes use :class:`RayQueue`, which has the
``multitask.Queue`` method set on top of ``ray.util.queue.Queue`` (an actor).
"""

from ._backend import BACKEND, RayBackend
from ._queue import RayQueue

__all__ = ["BACKEND", "RayBackend", "RayQueue"]
