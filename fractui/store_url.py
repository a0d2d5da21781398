"""Where the store is, as one URL: ``sqlite:///abs/path`` (the embedded default, a file on this
machine) or ``postgresql://user@host:port/db`` (a database that a team's users and schedulers
share). Its grammar alone, so the config checks a URL without opening anything; the store opens
one (fractui.store.url). A PostgreSQL URL never carries a password: libpq reads it from
PGPASSWORD or ~/.pgpass (and its other PG* variables), as psql does."""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote

from remote_agent.digits import whole

SQLITE = "sqlite://"
POSTGRESQL = ("postgresql://", "postgres://")  # both are libpq's


def sqlite_url(path: str) -> str:
    return SQLITE + path


def sqlite_path(url: str) -> Optional[str]:
    """The file of an SQLite URL; None for any other."""
    return url[len(SQLITE):] if url.startswith(SQLITE) else None


def postgresql_url(host: str, port: str, db: str) -> str:
    """A PostgreSQL store's address (no role, no password) as a URL that libpq reads back to
    the same server and database, so what an error or the scheduler names can be pasted as
    ``[store] url``: a Unix socket's directory percent-encoded (``%2Frun%2Fpostgresql``), an
    IPv6 address in brackets, each of several hosts (libpq's ``host=a,b``) with its port, the
    database's name percent-encoded."""
    hosts, ports = host.split(","), port.split(",")
    if len(ports) != len(hosts):  # one port for every host (libpq refuses other counts)
        ports = ports[:1] * len(hosts)
    return "postgresql://%s/%s" % (",".join(
        "%s:%s" % ("[%s]" % h if ":" in h and not h.startswith("/") else quote(h, safe=""), p)
        for h, p in zip(hosts, ports)), quote(db, safe=""))


# what an SQLite URL elsewhere reads as its own grammar, which fractui does not: a query
# (SQLAlchemy's and sqlite3's ``?mode=ro``), a fragment, a percent-escape (``%00``)
NOT_A_PATH = (("?", "a query string", 60), ("#", "a fragment", 60), ("%", "a percent-escape", 3))


def url_problem(url: str) -> Optional[str]:
    """Why ``url`` cannot name a store (said after the key that holds it), or None. An SQLite
    URL is ``sqlite://`` and a file's path, read as written: one holding what another reader
    of such URLs would take as a query, a fragment or a percent-escape is refused, never a
    file's name with it in (``x.db?mode=ro``) nor a NUL (``%00``). Its path is otherwise the
    caller's to check (the config checks it as any local file)."""
    if url.startswith(SQLITE):
        for sign, what, shown in NOT_A_PATH:
            if sign in url:
                at = url.index(sign)
                return "%r holds %s (%r): an SQLite URL is sqlite:// and the file's path, " \
                       "with no query, fragment or percent-escape, none of which fractui " \
                       "reads; a file whose name holds ?, # or %% is named by [scheduler] " \
                       "store = \"/its/path\"" % (url[:200], what, url[at:at + shown])
        return None
    if not url.startswith(POSTGRESQL):
        return "must start with sqlite:// (sqlite:///path/to/store.db) or postgresql:// " \
               "(postgresql://user@host:port/database), got %r" % url[:60]
    import psycopg  # only for a PostgreSQL URL: libpq's own reading of it
    from psycopg.conninfo import conninfo_to_dict
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error as err:
        return "is not a URL libpq can read: %s" % str(err).strip()
    if "password" in parts:
        return "carries a password, which a config file must not hold: give it in " \
               "PGPASSWORD or ~/.pgpass instead (libpq reads both)"
    if "sslpassword" in parts:  # a config may be read by all; it holds no secret
        return "carries the passphrase of its client key (sslpassword), which a config file " \
               "must not hold: give it in a service of your own ~/.pg_service.conf (0600; " \
               "service=NAME in the url), which libpq reads"
    port = parts.get("port")  # one per host of several (a:5432,b:5433); empty: the default
    for each in str(port).split(",") if port is not None else ():
        if each and not whole(each, 65535):
            return "has port %r: must be from 1 to 65535" % each
    return None
