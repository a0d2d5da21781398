"""The queue and job store: jobs, decisions, stale copies, the audit trail, the scheduler lease."""

from fractui.store.base import (JobNotFound, StateConflict, Store, StoreBusy, StoreDamaged,
                                StoreError, StoreFull, StoreReadOnly, StoreUnavailable)
from fractui.store.model import AuditEntry, Job, Refusal, Slot, StaleCopy
from fractui.store.sqlite import SqliteStore, default_store_path, open_store

__all__ = ["AuditEntry", "Job", "JobNotFound", "Refusal", "Slot", "SqliteStore", "StaleCopy",
           "StateConflict", "Store", "StoreBusy", "StoreDamaged", "StoreError", "StoreFull",
           "StoreReadOnly", "StoreUnavailable", "default_store_path", "open_store"]
