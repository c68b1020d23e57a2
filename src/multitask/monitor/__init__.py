"""Seeing what a multitask program is doing, from inside and from outside.

- :mod:`.registry` -- every program publishes its pools and processes (plain JSON, per-user
  0700 directory) for ``multitask ps`` / ``multitask top`` to read.
- :mod:`.procinfo` -- what the OS says about a pid: ``ps``'s STAT letter, CPU %, RSS, nice...
- :mod:`.view` -- joins the two into the rows ``ps``/``top`` print (and ``ps --json`` emits).
- :mod:`.top` -- the live ``multitask top`` screen.
- :mod:`.timeline` -- :class:`TaskRecord` and :func:`render_timeline`, a self-contained HTML
  Gantt chart of which worker ran which task when.

Layering: this package imports only ``multitask._core`` and ``multitask._engine.stats`` (plain data)
-- never the Pool, which imports the registry.  Submodules are imported on use so that the Pool's
``from multitask.monitor import registry`` does not pull in rich.
"""

from __future__ import annotations

__all__: list[str] = []
