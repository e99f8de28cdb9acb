"""The protocol core: pure functions and data, no I/O.

Nothing here opens a socket or a file, reads a clock or the environment, or draws random
numbers on its own: callers pass ``now_ms`` and random bytes in. The relay imports only
``codes``, ``errors``, ``frames`` and ``join``; it cannot decrypt because it never holds
what ``kdf`` and ``envelope`` need.
"""
