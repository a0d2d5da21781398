"""A link that stalls rather than drops: the proxy in front of a real sshd freezes (nothing
passes either way, nothing closes) while fractui uploads the agent or writes a call. Each
wait ends within the connect timeout, the host reads offline saying what stalled, the other
hosts go on, and the host is reached again once the link thaws."""

from __future__ import annotations

import threading
from typing import Any, List, Tuple

from fractui.fleet.fleet import Fleet
from fractui.fleet.host import AnswerLost, HostSession
from fractui.fleet.zipapp import build_agent_archive
from tests import test_fleet
from tests.test_fleet import wait_state

ssh_env = test_fleet.ssh_env
fleet_env = test_fleet.fleet_env

STALL_S = 2.0  # the connect timeout: what bounds each wait on the link
STALLED = "the link stalled: nothing sent was taken within 2 s"


def called(session: HostSession, method: str, params: Any
           ) -> Tuple[threading.Thread, List[BaseException]]:
    """``session.call`` on a thread of its own, and a list that gets what it raised."""
    raised: List[BaseException] = []

    def call() -> None:
        try:
            session.call(method, params, 120)
        except BaseException as err:  # (handed to the test, which checks it)
            raised.append(err)

    thread = threading.Thread(target=call, name="stalled-call", daemon=True)
    thread.start()
    return thread, raised


def offline(seen: List[Tuple[str, str, str]], name: str) -> str:
    """The error the host first read offline with (later tries, through a link still frozen,
    say only that no banner came)."""
    return next(error for host, state, error in seen if host == name and state == "offline")


def test_an_agent_upload_on_a_link_that_freezes_ends_names_the_host_and_recovers(fleet_env):
    """The link freezes part way through the agent's upload: the upload gives up within the
    connect timeout, the host reads offline saying so, nothing is put under the agent's name
    (the part sent has a name of its own, removed by the next upload), the other host
    answers all along, and the host is online again once the link thaws."""
    fleet_env.connect_timeout = STALL_S
    fleet_env.add("gpu-a", "1xL4")
    fleet_env.add("gpu-b", "1xL4")
    proxy = fleet_env.proxies["gpu-a"]
    proxy.freeze_after_up(100000)  # past the login and the checks, in the agent's bytes
    cache = fleet_env.tmp / "cache" / "gpu-a"
    archive = build_agent_archive()
    seen: List[Tuple[str, str, str]] = []
    with Fleet(fleet_env.config(), reconnect_max_s=0.5,
               on_change=lambda s: seen.append((s.name, s.state, s.error or ""))) as fleet:
        wait_state(fleet.session("gpu-b"), "online", 60)
        wait_state(fleet.session("gpu-a"), "offline", 60)
        assert proxy.frozen.is_set()
        first = offline(seen, "gpu-a")
        assert first in ("cannot put the agent in %s on gpu-a: %s" % (cache, why) for why in (
            "no answer from SFTP within 2 s", STALLED)), first
        assert not (cache / archive.name).exists()
        assert [p.name.startswith(archive.name + ".part-") for p in cache.iterdir()] == [True]
        assert fleet.session("gpu-b").call("inventory")["gpus"][0]["name"] == "NVIDIA L4"
        proxy.thaw()
        wait_state(fleet.session("gpu-a"), "online", 60)
        assert fleet.session("gpu-a").call("inventory")["gpus"][0]["name"] == "NVIDIA L4"
    assert [p.name for p in cache.iterdir()] == [archive.name]
    assert (cache / archive.name).read_bytes() == archive.data


def test_a_call_the_frozen_link_cannot_take_ends_and_the_host_reads_offline(fleet_env):
    """Calls of a megabyte each go into a link that froze (a narrow one: its kernel buffers
    hold less than that, as across a network): paramiko tried the write again without end,
    the calls, and every call behind them, waited until TCP gave up (never, here: the frozen
    end still answers TCP's probes), and the host read online all the while (no probe is sent
    while a call is in flight). Now a send the link takes nothing of within the connect
    timeout ends the link: the calls end, saying the link stalled, as the host does offline,
    the other host answers all along, and the host is back once the link thaws."""
    fleet_env.connect_timeout = STALL_S
    fleet_env.add("gpu-a", "1xL4", narrow=True)
    fleet_env.add("gpu-b", "1xL4")
    proxy = fleet_env.proxies["gpu-a"]
    seen: List[Tuple[str, str, str]] = []
    with Fleet(fleet_env.config(), reconnect_max_s=0.5, on_change=lambda s: seen.append(
            (s.name, s.state, s.error or ""))) as fleet:
        stalled, other = fleet.session("gpu-a"), fleet.session("gpu-b")
        wait_state(stalled, "online", 60)
        wait_state(other, "online", 60)
        proxy.freeze()
        try:
            calls = [called(stalled, "daemon.version", {"pad": "x" * 1000000})
                     for _ in range(2)]
            for thread, raised in calls:
                thread.join(60)
                assert not thread.is_alive(), "a call into the frozen link still waits"
                assert [type(err) for err in raised] == [AnswerLost], raised
                assert str(raised[0]) == "gpu-a: the connection was lost waiting for the " \
                    "answer to daemon.version: %s" % STALLED, str(raised[0])
            wait_state(stalled, "offline", 60)
            assert offline(seen, "gpu-a") == "connection lost: " + STALLED, seen
            assert other.call("inventory")["gpus"][0]["name"] == "NVIDIA L4"
        finally:  # (where it failed: the fleet's stop would wait on the frozen link too)
            proxy.thaw()
        wait_state(stalled, "online", 60)
