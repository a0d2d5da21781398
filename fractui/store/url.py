"""The one way to open the store, by its URL (fractui.store_url says the URL's grammar)."""

from __future__ import annotations

import os
from typing import Optional

from fractui.store import sqlite_file
from fractui.store.base import NO_STORE, Store, StoreError, StoreReadOnly, StoreUnavailable
from fractui.store.sqlite import SqliteStore, default_store_path
from fractui.store_url import sqlite_path, url_problem


def store_exists(url: Optional[str]) -> bool:
    """Whether a store is there to open without making one: a database (made by an admin) is
    taken to be; an SQLite file must exist. None: the default file, never taken to be."""
    if url is None:
        return False
    path = sqlite_path(url)
    return path is None or os.path.exists(path)


def open_store(url: Optional[str] = None, make: bool = True,
               origin: Optional[str] = None) -> Store:
    """The store at ``url``; None: the default SQLite file (``default_store_path``). ``make``
    False (a verb that only reads, or names a job the store must hold): a store that is not
    there is StoreUnavailable (NO_STORE), not made — a mistyped path read as a store with no
    jobs, and made its reader its owner (an admin). For PostgreSQL the database is an
    admin's to make; the store in it (its tables) is not made either. ``origin``: where the
    config gives the URL (StoreSettings.origin), named where the URL is what was refused."""
    path = default_store_path() if url is None else sqlite_path(url)
    if path is not None:
        path = os.path.abspath(path)
        if sqlite_file.absent(path) and (not make or sqlite_file.unmakeable(path)):
            raise no_store(path)
        return SqliteStore(path)
    problem = url_problem(url)
    if problem is not None:
        raise ValueError("store url %s" % problem)
    from fractui.store.postgres import PostgresStore  # psycopg is loaded for PostgreSQL only
    return PostgresStore(url, make=make, origin=origin)


def no_store(path: str) -> StoreError:
    """The SQLite store at ``path`` is not there (NO_STORE), said one way by every verb, one
    that only reads (``make`` False) as one that would make it (a submit, the hosts' listing
    of ``jobs``): with why none can be made there where that is seen (a read-only home), a
    StoreReadOnly then."""
    why = sqlite_file.unmakeable(path)
    if why is None:
        return StoreUnavailable(path, NO_STORE)
    return StoreReadOnly(path, "there is no store here yet, and none can be made there: %s"
                         % why)
