"""Where the store is, as one URL, and the one way to open it: ``sqlite:///abs/path`` (the
embedded default, a file on this machine) or ``postgresql://user@host:port/db`` (a database
that a team's users and schedulers share). A PostgreSQL URL never carries a password: libpq
reads it from PGPASSWORD or ~/.pgpass (and its other PG* variables), as psql does."""

from __future__ import annotations

import os
from typing import Optional

from fractui.store.base import Store
from fractui.store.sqlite import SqliteStore, default_store_path

SQLITE = "sqlite://"
POSTGRESQL = ("postgresql://", "postgres://")  # both are libpq's


def sqlite_url(path: str) -> str:
    return SQLITE + path


def sqlite_path(url: str) -> Optional[str]:
    """The file of an SQLite URL; None for any other."""
    return url[len(SQLITE):] if url.startswith(SQLITE) else None


def url_problem(url: str) -> Optional[str]:
    """Why ``url`` cannot name a store (said after the key that holds it), or None. An SQLite
    URL's path is the caller's to check (the config checks it as any local file)."""
    if url.startswith(SQLITE):
        return None
    if not url.startswith(POSTGRESQL):
        return "must start with sqlite:// (sqlite:///path/to/store.db) or postgresql:// " \
               "(postgresql://user@host:port/database), got %r" % url[:60]
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error as err:
        return "is not a URL libpq can read: %s" % str(err).strip()
    if "password" in parts:
        return "carries a password, which a config file must not hold: give it in " \
               "PGPASSWORD or ~/.pgpass instead (libpq reads both)"
    port = parts.get("port")
    if port is not None and not (str(port).isdigit() and 1 <= int(port) <= 65535):
        return "has port %r: must be from 1 to 65535" % port
    return None


def store_exists(url: Optional[str]) -> bool:
    """Whether a store is there to open without making one: a database (made by an admin) is
    taken to be; an SQLite file must exist. None: the default file, never taken to be."""
    if url is None:
        return False
    path = sqlite_path(url)
    return path is None or os.path.exists(path)


def open_store(url: Optional[str] = None) -> Store:
    """The store at ``url``; None: the default SQLite file (``default_store_path``)."""
    if url is None:
        return SqliteStore(default_store_path())
    path = sqlite_path(url)
    if path is not None:
        return SqliteStore(path)
    problem = url_problem(url)
    if problem is not None:
        raise ValueError("store url %s" % problem)
    from fractui.store.postgres import PostgresStore
    return PostgresStore(url)
