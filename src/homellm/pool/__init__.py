"""More than one machine behind one gateway: the pieces of the pool that are not the router itself.

``breaker.py`` and ``fair_queue.py`` are the router's pure state machines; ``members.py`` builds the
pool from the settings and the joined workers; ``worker_link.py`` is the pinned, mutually
authenticated TLS link between the main gateway and a worker; ``join.py`` is the worker's side of
``homellm join``. The router that uses them is :mod:`homellm.serve.router`.
"""
