"""The soak suite: seeded, randomised mixes of everything a pool does, checked exactly.

``make soak`` runs the long form (``python -m soak --minutes 30`` with ``tests`` on the path);
``tests/test_soak.py`` runs a short form in ``make test``.  Every run prints its seed; a failing
run prints the seed and how to replay it (``python -m soak --seed N``), the pool's statistics
and every thread's stack.
"""
