"""fractui's host agent: GPU inventory, live MIG reconfiguration and (later) job supervision.

Runs on GPU hosts with nothing but Python >= 3.9 and the pure-Python ``pynvml`` module, so it
imports only the standard library, ``pynvml`` and itself — never ``fractui``.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
