"""The queue and job store: jobs, decisions, stale copies, the audit trail, the scheduler lease."""

from fractui.store.base import (JobNotFound, LeaseLost, QuotaTaken, RowsLocked, StateConflict,
                                Store, StoreBusy, StoreDamaged, StoreDenied, StoreError,
                                StoreForbidden, StoreFull, StoreReadOnly, StoreUnavailable)
from fractui.store.model import AuditEntry, Job, Refusal, Slot, StaleCopy
from fractui.store.sqlite import SqliteStore, default_store_path
from fractui.store.url import open_store
from fractui.store_url import sqlite_url

__all__ = ["AuditEntry", "Job", "JobNotFound", "LeaseLost", "QuotaTaken", "Refusal",
           "RowsLocked", "Slot", "SqliteStore", "StaleCopy", "StateConflict", "Store",
           "StoreBusy", "StoreDamaged", "StoreDenied", "StoreError", "StoreForbidden",
           "StoreFull", "StoreReadOnly", "StoreUnavailable", "default_store_path", "open_store",
           "sqlite_url"]
