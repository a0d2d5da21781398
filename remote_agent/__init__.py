"""fractui's host agent: GPU inventory, live MIG reconfiguration and (later) job supervision.

Runs on GPU hosts with nothing but Python >= 3.9 and the pure-Python ``pynvml`` module, so it
imports only the standard library, ``pynvml`` and itself — never ``fractui``.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

# What this agent can do that its methods' names do not say, listed in ``hello.features``: a
# client uses a behaviour only where the agent lists it, so an older agent (one baked into a
# job image) is never asked what it does not know. Each names a method's param it takes.
MODE_RESET = "mig.set_mode.reset"  # mig.set_mode resets a GPU whose new mode waits for one
MODE_DESTROY_IDLE = "mig.set_mode.destroy_idle"  # ... and destroys idle instances before off
LOG_BYTES = "job.logs.bytes"  # job.logs answers the log's last bytes as they are, in ``data``
# job.get, job.stop and job.logs take the key of the job the client means: a job of that id with
# another key (the state dir wiped, its ids counted from j1 again) is refused, not touched
JOB_KEYS = ("job.get.key", "job.stop.key", "job.logs.key")
FEATURES = (MODE_RESET, MODE_DESTROY_IDLE, LOG_BYTES) + JOB_KEYS
# How mig.plan and mig.apply end a needs_destroy refusal: a client may say it in its own words.
DESTROY_IDLE_HINT = "; pass destroy_idle: true to allow it"
