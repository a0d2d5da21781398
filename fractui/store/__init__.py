"""The queue and job store: jobs, decisions, stale copies, the audit trail, the scheduler lease."""

from fractui.store.base import JobNotFound, StateConflict, Store
from fractui.store.model import AuditEntry, Job, Slot, StaleCopy
from fractui.store.sqlite import SqliteStore, default_store_path, open_store

__all__ = ["AuditEntry", "Job", "JobNotFound", "Slot", "SqliteStore", "StaleCopy",
           "StateConflict", "Store", "default_store_path", "open_store"]
