"""A GPU that a failed MIG change left changed is reported, on real processes: the agent over a
pipe (through its daemon's socket) and the admin side's host session, which turns the host
degraded while the agent says so and online again once it does not."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from fractui.config import HostConfig, SshSettings
from fractui.fleet.host import HostSession
from fractui.fleet.zipapp import build_agent_archive
from remote_agent.mig import journal
from remote_agent.mig.health import Degraded, GpuHealth
from remote_agent.mig.made_again import MadeAgain
from remote_agent.rpc import jsonrpc as rpc
from tests.conftest import AgentError, stop_host


def unrestorable_apply(agent, gpu: int = 0) -> AgentError:
    """A change whose new instance, and the undo of its destroy, the GPU always refuses."""
    agent.call("sim.fault", function="nvmlDeviceCreateGpuInstanceWithPlacement",
               error="NVML_ERROR_GPU_IS_LOST", count=1000)
    with pytest.raises(AgentError) as err:
        agent.call("mig.apply", gpu=gpu, profile="4g.40gb", destroy_idle=True)
    agent.call("sim.clear_faults")
    return err.value


def test_the_agent_reports_a_gpu_it_could_not_restore_until_a_change_succeeds(start_agent):
    agent = start_agent("1xA100-80GB:mig,1xL4")
    for _ in range(2):
        agent.call("mig.apply", gpu=0, profile="3g.40gb")
    err = unrestorable_apply(agent)
    assert err.code == rpc.NVML_FAILED and err.data["class"] == rpc.HOST
    assert err.data["rolled_back"] is False
    assert [(i["profile"], i["start"]) for i in err.data["now"]] == [("3g.40gb", 4)]
    gpus = agent.call("inventory")["gpus"]
    assert gpus[0]["degraded"] == err.message and "degraded" not in gpus[1]
    assert [(i["profile"], i["start"]) for i in gpus[0]["instances"]] == [("3g.40gb", 4)]
    assert agent.call("hello")["problems"] == ["GPU 0 is degraded: %s" % err.message]
    agent.call("mig.apply", gpu=0, profile="3g.40gb", start=0)
    assert "degraded" not in agent.call("snapshot")["gpus"][0]
    assert agent.call("hello")["problems"] == []


def test_a_restarted_agent_says_the_same_degraded_words(start_agent, tmp_path):
    """The mark a failed change left, and its words, outlive the daemon (killed -9 here): a
    new one says the change's own words, not none, until a change on the GPU succeeds; then
    a daemon after it says nothing either."""
    state = tmp_path / "host"
    agent = start_agent("1xA100-80GB:mig,1xL4", str(state))
    for _ in range(2):
        agent.call("mig.apply", gpu=0, profile="3g.40gb")
    err = unrestorable_apply(agent)
    later = restart(agent, start_agent, state)
    assert later.call("hello")["problems"] == ["GPU 0 is degraded: %s" % err.message]
    gpus = later.call("inventory")["gpus"]
    assert gpus[0]["degraded"] == err.message and "degraded" not in gpus[1]
    assert (state / "gpu-health.json").stat().st_mode & 0o777 == 0o600
    later.call("mig.apply", gpu=0, profile="3g.40gb", start=0)
    assert later.call("hello")["problems"] == []
    last = restart(later, start_agent, state)
    assert last.call("hello")["problems"] == []
    assert "degraded" not in last.call("snapshot")["gpus"][0]


def fall_off(state, index: int, spec: str) -> None:
    """GPU ``index`` off the bus while no daemon runs: the simulated host's state without it
    (``spec``: the GPUs left), so that those after it take an index one lower, as NVML
    numbers the GPUs it finds."""
    path = state / "sim" / "gpus.json"
    host = json.loads(path.read_text())
    del host["gpus"][index]
    host["spec"] = spec
    path.write_text(json.dumps(host))


@pytest.mark.parametrize("marked", [1, 0], ids=["another-falls-off", "it-falls-off"])
def test_a_gpus_mark_and_xids_are_said_of_it_whatever_its_index_after_a_gpu_falls_off(
        start_agent, tmp_path, marked):
    """GPU ``marked`` degraded by a failed change and raising an XID; GPU 0 falls off the bus
    before the next daemon starts, so GPU 1 is GPU 0 now. The mark and the XID are kept by
    the GPU's UUID: said of GPU 1 as GPU 0 now, and of no GPU once GPU 0 (the marked one) is
    gone. Before, both were kept by index: said of GPU 0 (another GPU) or of a GPU 1 no
    longer there, and never of the GPU they were of."""
    state = tmp_path / "host"
    agent = start_agent("2xA100-80GB:mig", str(state))
    for _ in range(2):
        agent.call("mig.apply", gpu=marked, profile="3g.40gb")
    err = unrestorable_apply(agent, gpu=marked)
    wait_for(lambda: "xid_note" not in agent.call("snapshot")["gpus"][marked]["health"])
    agent.call("sim.xid", gpu=marked, xid=79)
    wait_for(lambda: agent.call("snapshot")["gpus"][marked]["health"]["xid"])
    uuid = agent.call("inventory")["gpus"][1]["uuid"]
    os.kill(agent.call("daemon.version")["pid"], signal.SIGKILL)
    agent.proc.wait(timeout=10)
    fall_off(state, 0, "1xA100-80GB:mig")
    later = start_agent(None, str(state))
    [now] = later.call("snapshot")["gpus"]
    assert now["uuid"] == uuid
    if marked == 1:
        assert later.call("hello")["problems"] == ["GPU 0 is degraded: %s" % err.message]
        assert now["degraded"] == err.message
        assert [e["xid"] for e in now["health"]["xid"]] == [79]
    else:
        assert later.call("hello")["problems"] == []
        assert "degraded" not in now and now["health"]["xid"] == []


def test_marks_written_in_another_boot_are_dropped(start_agent, tmp_path):
    """A reboot ends what a failed change left (MIG instances do not outlive it): a mark kept
    from before one says nothing, though the GPU reads unlike what it expected."""
    state = tmp_path / "host"
    agent = start_agent("1xA100-80GB:mig", str(state))
    for _ in range(2):
        agent.call("mig.apply", gpu=0, profile="3g.40gb")
    unrestorable_apply(agent)
    kept = json.loads((state / "gpu-health.json").read_text())
    assert len(kept["kept"]) == 1
    (state / "gpu-health.json").write_text(json.dumps({**kept, "boot": "another boot"}))
    assert restart(agent, start_agent, state).call("hello")["problems"] == []


@pytest.mark.parametrize("name,damage", [
    ("gpu-health.json", '{"version": 1, "boot": "'),
    ("gpu-health.json", "[" * 100000),
    ("xid-events.json", '{"version": 2, "boot": "%s", "kept": {"GPU-a": [{"time": "soon"}]}}'),
    ("xid-events.json", "\0" * 64),
    ("mig-made-again.json", '{"version": 2, "boot": "%s", "kept": [{"uuid": "MIG-b", '
                            '"remade_of": [7]}]}'),
    ("mig-made-again.json", '{"version": 2, "boot": "%s", "kept": {"MIG-b": ["MIG-a"]}}')],
    ids=["marks-cut", "marks-deep", "xid-shape", "xid-zeroed", "links-shape", "links-dict"])
def test_a_damaged_kept_file_is_set_aside_once_and_the_agent_serves(start_agent, tmp_path,
                                                                    name, damage):
    """A kept file damaged (cut short by a full disk under an older agent, zeroed by a crash,
    of another shape, nested past the parser): the agent starts, judges its GPUs afresh, says
    once which file and why, and sets it aside, 0600, for whoever looks into why; a daemon
    after it says nothing of it. Before, one nested past the parser kept the daemon from
    starting, and each start read the same damaged file again."""
    state = tmp_path / "host"
    state.mkdir(mode=0o700)
    kept = state / name
    content = damage.replace("%s", journal.boot_id() or "").encode()  # (this boot's)
    kept.write_bytes(content)
    kept.chmod(0o600)
    agent = start_agent("1xA100-80GB:mig", str(state))
    assert agent.call("hello")["problems"] == []
    aside = state / (name + ".damaged")
    assert aside.read_bytes() == content
    assert aside.stat().st_mode & 0o777 == 0o600
    restart(agent, start_agent, state).call("hello")
    said = [line for line in (state / "daemon.log").read_text().splitlines()
            if "damaged" in line]
    assert len(said) == 1, said
    assert " ERROR %s (the %s) is damaged (" % (kept, {
        "gpu-health.json": "GPU health marks", "xid-events.json": "XID events",
        "mig-made-again.json": "links of the MIG instances made again"}[name]) in said[0]
    assert "; set aside as %s, and " % aside in said[0]


def kept_by(state: Path, name: str, version: int, kept: Any) -> Path:
    """The file ``name`` in the state dir, as an agent of ``version`` keeps it in this boot."""
    state.mkdir(mode=0o700, exist_ok=True)
    path = state / name
    path.write_text(json.dumps({"version": version, "boot": journal.boot_id(), "kept": kept}))
    path.chmod(0o600)
    return path


def said_set_aside(kept: Path, version: int, what: str, why: str) -> str:
    """The daemon's log line saying the ``what`` in ``kept``, of ``version``, not taken for
    ``why`` and set aside, asserted there; its words up to what is lost."""
    said = (kept.parent / "daemon.log").read_text()
    line = "WARNING the %s kept in %s are of another version of the agent (%d, not 2: %s): " \
        "not taken; " % (what, kept, version, why)
    assert line in said and said.split(line, 1)[1].split("\n", 1)[0].endswith(
        "; set aside as %s.v%d" % (kept, version)), said
    return line


def test_marks_an_older_agent_kept_by_gpu_index_are_not_taken_and_said(start_agent, tmp_path):
    """Marks kept by an agent before this one (version 1), in this boot, by GPU index: not
    taken, since the index may name another GPU by now, and the log says so once (the file set
    aside: said at each start before, until the daemon kept marks of its own); the GPU is
    judged afresh."""
    state = tmp_path / "host"
    kept = kept_by(state, "gpu-health.json", 1, [
        {"gpu": 0, "reason": "the undo failed", "mode": [False, False], "placements": None}])
    agent = start_agent("1xA100-80GB:mig", str(state))
    assert agent.call("hello")["problems"] == []
    older = said_set_aside(kept, 1, "GPU health marks", "kept by GPU index, which may name "
                           "another GPU by now; this one keeps them by GPU UUID")
    aside = state / "gpu-health.json.v1"
    assert not kept.exists() and aside.stat().st_mode & 0o777 == 0o600
    assert json.loads(aside.read_text())["version"] == 1  # as it was, for whoever looks
    restart(agent, start_agent, state).call("hello")  # said once, not at each start
    assert (state / "daemon.log").read_text().count(older) == 1


def test_links_of_another_version_are_set_aside_saying_their_own_reason(start_agent, tmp_path,
                                                                       caplog):
    """The links of the instances made again, kept by a newer agent (version 3, this boot):
    not taken, set aside, and the log says why in words of their own. It gave the health
    marks' reason ("which keeps them by GPU UUID"), though no agent kept links by GPU index.
    A version no agent keeps them in (1) says so."""
    state = tmp_path / "host"
    kept = kept_by(state, "mig-made-again.json", 3, {})
    agent = start_agent("1xH100:mig", str(state))
    assert agent.call("snapshot")["gpus"][0]["instances"] == []
    said_set_aside(kept, 3, "links of the MIG instances made again", "written by a newer "
                   "agent, in a form this one cannot read")
    said = (state / "daemon.log").read_text()
    assert "GPU UUID" not in said and "GPU index" not in said
    assert not kept.exists() and (state / "mig-made-again.json.v3").exists()
    kept_by(state, "mig-made-again.json", 1, [])
    caplog.set_level(logging.WARNING, logger="remote_agent.daemon.kept")
    assert MadeAgain(path=str(kept)).of("MIG-a") == ()
    (once,) = [r.getMessage() for r in caplog.records]
    assert "(1, not 2: a form no agent keeps this file in): not taken; " in once, once


def test_marks_are_not_taken_where_the_boot_cannot_be_read(tmp_path, monkeypatch, caplog):
    """Without a boot id (a /proc that lacks it) a reboot cannot be told: a mark kept then
    is not taken by the next daemon, which would say of a rebooted GPU what a change of a
    boot long over left — and it is said why. Where the id reads, it is taken."""
    mark = Degraded("the undo failed", (True, True), None)
    kept = str(tmp_path / "gpu-health.json")
    GpuHealth(kept).mark("GPU-a", mark)
    assert GpuHealth(kept).marked("GPU-a")  # (this boot's id reads here)
    monkeypatch.setattr(journal, "BOOT_ID", str(tmp_path / "no-boot-id"))
    unknown = str(tmp_path / "unknown-boot.json")
    GpuHealth(unknown).mark("GPU-a", mark)
    assert not GpuHealth(unknown).marked("GPU-a") and not GpuHealth(kept).marked("GPU-a")
    assert "this boot's id cannot be read" in caplog.text, caplog.text


def restart(agent, start_agent, state):
    """Kill the host's daemon (-9: nothing it does on a clean stop helps) and start another."""
    os.kill(agent.call("daemon.version")["pid"], signal.SIGKILL)
    agent.proc.wait(timeout=10)
    return start_agent(None, str(state))


def wait_for(check, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while not check():
        assert time.time() < deadline, "never happened"
        time.sleep(0.05)


def test_a_host_is_degraded_while_a_snapshot_says_a_gpu_is(tmp_path):
    host = HostConfig(name="gpu-sim", transport="local", sim="1xA100-80GB:mig",
                      state_dir=str(tmp_path / "state"))
    session = HostSession(host, SshSettings(), build_agent_archive)
    session.start()
    try:
        wait_for(lambda: session.status.state == "online")
        for _ in range(2):
            session.call("mig.apply", {"gpu": 0, "profile": "3g.40gb"})
        session.call("sim.fault", {"function": "nvmlDeviceCreateGpuInstanceWithPlacement",
                                   "error": "NVML_ERROR_GPU_IS_LOST", "count": 1000})
        with pytest.raises(Exception) as err:
            session.call("mig.apply", {"gpu": 0, "profile": "4g.40gb", "destroy_idle": True})
        session.call("sim.clear_faults")
        assert "could NOT be restored" in str(err.value)
        wait_for(lambda: session.status.state == "degraded")
        assert session.status.error.startswith("GPU 0 is degraded: ")
        session.call("mig.apply", {"gpu": 0, "profile": "3g.40gb", "start": 0})
        wait_for(lambda: session.status.state == "online")
        assert session.status.error is None
    finally:
        session.stop()
        stop_host(host.state_dir)
