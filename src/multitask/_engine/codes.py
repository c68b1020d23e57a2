"""The numbers a task carries between a front end, a backend and a worker (defined once).

*Modes* say what a task's data is and what its result will be.  *Statuses* say how a task (or
one item of an item group) ended in the worker.  Both travel on the wire (the process backend's
record headers, the Ray actor's return value), so they are small ints, and they are shared by
the parent and the worker: keep this module free of imports.
"""

MODE_CALL = 0      # data is (args, kwargs); the result is one value
MODE_MAP = 1       # data is a sequence of items; fn(item) for each; the result is a list
MODE_STARMAP = 2   # data is a sequence of argument tuples; fn(*item) for each
MODE_ITEMS = 3     # data is a list of items, each its own task (imap with chunksize 1): fn(item)
                   # for each, one outcome per item (see jobs.MapJob: "item groups")

ST_OK = 0              # the value is the result
ST_RAISED = 1          # the value is the function's exception (the error envelope)
ST_UNSERIALIZABLE = 2  # the function returned, but its result could not be pickled
