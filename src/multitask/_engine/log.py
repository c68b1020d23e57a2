"""The ``"multitask"`` logger, shared by the front ends and the backends."""

from __future__ import annotations

from typing import Any


class _Logger:
    """The ``"multitask"`` logger, looked up on first use: importing :mod:`logging` (and
    :mod:`traceback`) costs ~8 ms that a pool which never logs should not pay at start-up."""

    def __getattr__(self, name: str) -> Any:
        import logging

        return getattr(logging.getLogger("multitask"), name)


logger: Any = _Logger()
