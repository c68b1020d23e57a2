"""The inner layer of multitask.

Rule (checked by ``tests/test_layers.py``): modules in ``multitask._core`` import nothing from
the rest of the package -- only the standard library, the C extension ``_ringbuf`` and third-party
dependencies.  Everything public is built on top of this layer, never the other way round.
"""
