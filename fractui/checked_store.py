"""The store as the verbs and the TUI open it: with the config's queues checked against what it
keeps of the hosts (fractui.servable), and what it keeps renewed from the hosts themselves
before a queue is refused on it."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from fractui.config import Config
from fractui.sched.fleetview import HostView, facts
from fractui.servable import unservable
from fractui.store import Store, StoreUnavailable, open_store
from fractui.store.access import SCHEDULE
from fractui.store.base import NO_STORE, StoreError
from fractui.store.intents import Asker, allowed, authorize
from fractui.store.model import OUT_OF_CONFIG


def open_checked_store(config: Config, hear: bool = True, make: bool = True,
                       first: Optional[str] = None) -> Store:
    """The store, with the config's queues checked against what it keeps of the hosts (a
    queue none of whose hosts could serve it is the config's error, exit 2). With ``hear``, a
    refusal is made only on what the hosts say now: the hosts are heard first, and the store's
    facts renewed — the lease holder's work, so only for a caller the rule lets schedule
    (access.SCHEDULE): anyone else's verb reaches no host for it and writes none of it.
    Without (the self-serve verbs, for users who reach only the store), or for anyone else,
    on what the store keeps, as the lease holder recorded it. ``first``: an admin's action the
    rule is asked of before the queues are checked (access.Denied): a member is told the verb
    is the admin's, not her config's mistake. ``make`` False (the verbs that only read, and
    those that name a job it must hold): a store that is not there is said so, never made
    (fractui.store.url.open_store)."""
    store = open_store(config.store.url, make=make, origin=config.store.origin)
    try:
        asker = Asker.here(config.teams)
        if first is not None:
            authorize(store, asker, first)
        problem = unservable(config, store.inventory())
        if problem is not None and hear and allowed(store, asker, SCHEDULE):
            problem = unservable(config, heard_inventory(config, store))
        if problem is not None:
            raise problem
    except BaseException:
        store.close()
        raise
    return store


def no_store_to_ask(err: StoreError) -> bool:
    """Whether ``err`` leaves no store to ask who may read the hosts' jobs' output: none made
    (NO_STORE) or none reached (StoreUnavailable: a server down, unknown, without the
    database). Then the hosts' logins are the boundary, and what their agents have is shown
    as they have it (docs/decisions.md). Any other error is the store's answer, and no yes:
    a refusal of this role (StoreDenied, StoreForbidden), a store damaged or held locked."""
    return isinstance(err, StoreUnavailable)


def host_first(config: Config, host: str) -> None:
    """``host`` looked up in a config that lists hosts, before any store or host is reached:
    a typo is the command line's error (exit 2) whether the store is up or not. A config of
    no ``[[hosts]]`` (a researcher's) has it looked up after the rule, so a member is told
    the verb is the admin's, not that her config lacks the host."""
    if config.hosts:
        config.host(host)


def store_of_a_host_verb(config: Config, host: str,
                         opener: Callable[[bool], Store], known_first: bool = True) -> Store:
    """The store an admin's verb on ``host`` asks who may of, opened by ``opener(make)``:
    ``host`` looked up first where the config lists hosts (``host_first``; not where
    ``known_first`` is False: uncordon may name a host left out of the config). Where no
    store is made yet, ``host`` is looked up first all the same and only then is the store
    made, so a mistyped host (exit 2, a usage error) makes none; its maker is its admin, so
    asking first would tell nothing."""
    if known_first:
        host_first(config, host)
    try:
        return opener(False)
    except StoreUnavailable as err:
        if err.what != NO_STORE:
            raise
    config.host(host)
    return opener(True)


def heard_inventory(config: Config, store: Store) -> Dict[str, Dict[str, Any]]:
    """Asks the fleet (as a scheduler would see it) for every host's facts, keeps those that
    answered in the store, and returns the inventory: fresh where heard, kept where not. A
    host the lease holder marked out of its config keeps the mark (OUT_OF_CONFIG): this
    config may list it, but the holder's word on it stands for a member's submit."""
    from fractui.fleet.fleet import open_fleet  # here: the verbs that reach only the store
    #                                             load no SSH (paramiko)
    fleet = open_fleet(config)
    try:
        heard = {s.name: facts(HostView.of(s, config.mode_fixed(s.name)))
                 for s in fleet.statuses() if s.hello}
    finally:
        fleet.stop()
    kept = store.inventory()
    store.keep_inventory({n: dict(f, **{OUT_OF_CONFIG: True}) if (
        kept.get(n) or {}).get(OUT_OF_CONFIG) else f for n, f in heard.items()}, kept)
    return kept
