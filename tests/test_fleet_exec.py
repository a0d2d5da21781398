"""The exec transport with a real podman: a simulated host inside a container of the tests' own
image, reached by ``podman exec -i NAME`` (its agent from the image, or uploaded through exec),
seen by ``fractui status`` and the TUI, changing MIG and running capped jobs inside the
container, and surviving its exec stream being killed (the podman process here, or the agent's
bridge in there) as it survives an SSH drop; a target found by a lookup that follows a
replaced container; an upload cut in the container leaves no partial of ours past a later
upload, which keeps a live one's; exec argv that cannot work, told in words. Without podman
(``env`` as the exec program, running the agent's words here): the upload through the argv,
once; one where flock is refused, or cut by a SIGTERM as its partial is locked or renamed
(or a SIGINT as it is renamed); a partial no lock holds swept only once old; an image whose
agent speaks another protocol; what a lookup prints that names no one target."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import remote_agent
from fractui import __version__ as fractui_version
from fractui.config import load_config
from fractui.fleet.fleet import Fleet
from fractui.fleet.host import HostSession, HostStatus
from fractui.fleet.transport.base import AgentProcessError
from fractui.fleet.transport.exec import PARTIAL_NAME, PARTIAL_STALE_S, ExecTransport
from fractui.fleet.zipapp import build_agent_archive, write_archive
from fractui.store import open_store, sqlite_url
from fractui.tui.app import FractuiApp
from fractui.tui.source import LiveSource
from remote_agent import PROTOCOL_VERSION
from tests.cli_run import leaks, subprocess_run
from tests.conftest import stop_host
from tests import podman as containers
from tests.podman import IMAGE_AGENT, IMAGE_CODE, PYTHON, Podman
from tests.tui_frozen import pilot_test
from tests.tui_live import fleet as fleet_screen, gpu_line, until

podman = containers.podman

SIM = "1xA100-80GB:mig,1xL4"
SIMLOAD = [PYTHON, "-m", "remote_agent.simload"]


@pytest.fixture(scope="module")
def box(podman: Podman):
    """One container for the module's hosts (each test its own state dir in it)."""
    name = podman.start_container()
    try:
        yield name
    finally:
        podman.remove(name)


def write_config(tmp_path, *hosts: dict) -> str:
    lines: List[str] = []
    for host in hosts:
        lines.append("[[hosts]]")
        lines += ["%s = %s" % (key, json.dumps(value)) for key, value in host.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def fractui(config: str, *args: str):
    done = subprocess_run(["--config", config, *args])
    assert not leaks(done.stderr), done.stderr
    return done


def status(config: str) -> Dict[str, dict]:
    done = fractui(config, "status", "--json")
    assert done.stdout, done.stderr
    return {h["name"]: h for h in json.loads(done.stdout)["hosts"]}


def exec_host(box: str, name: str, **extra) -> dict:
    return dict(name=name, transport="exec", exec=["podman", "exec", "-i", box], sim=SIM,
                state_dir="/var/lib/fractui-%s" % name, **extra)


def in_box(podman: Podman, box: str, *words: str) -> List[Tuple[int, List[str]]]:
    """The processes inside the container whose command line has all these words."""
    listed = podman.run(["exec", box, PYTHON, "-c", (
        "import json, os\nout = []\nfor p in os.listdir('/proc'):\n"
        "    try:\n        cmd = open('/proc/%s/cmdline' % p, 'rb').read()\n"
        "    except OSError:\n        continue\n"
        "    if p.isdigit() and cmd:\n"
        "        out.append([int(p), cmd.decode().split(chr(0))[:-1]])\n"
        "print(json.dumps(out))")]).stdout
    return [(pid, cmd) for pid, cmd in json.loads(listed) if all(w in cmd for w in words)]


def here(*words: str) -> List[int]:
    """The processes on this machine whose command line has all these words."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmd = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if entry.isdigit() and all(w in cmd for w in words):
            found.append(int(entry))
    return found


class States:
    """Every (state, error) a host session passes through, in order, as it tells them."""

    def __init__(self, session: HostSession):
        self.seen: List[Tuple[str, Optional[str]]] = []
        self.changed = threading.Condition()
        session.watchers.append(self._note)

    def _note(self, status: HostStatus) -> None:
        with self.changed:
            self.seen.append((status.state, status.error))
            self.changed.notify_all()

    def wait(self, check: Callable[[List[Tuple[str, Optional[str]]]], bool], what: str,
             timeout_s: float = 60.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: check(self.seen), timeout_s), (
                "never %s: %s" % (what, self.seen))

    def drop_then_back(self, words: str) -> str:
        """Wait for the host to go offline with ``words`` in its error and then come back
        online; the error it went offline with."""
        def offline_then_online(seen: List[Tuple[str, Optional[str]]]) -> bool:
            down = [i for i, (state, error) in enumerate(seen)
                    if state == "offline" and words in (error or "")]
            return bool(down) and any(s == "online" for s, _ in seen[down[0]:])

        self.wait(offline_then_online, "offline with %r, then online" % words)
        return next(error for state, error in self.seen
                    if state == "offline" and words in (error or ""))


def until_true(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    """What ``check`` returns once it is true (asked every 0.2 s, up to ``timeout_s``)."""
    deadline = time.time() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.time() < deadline, "never happened: %s" % what
        time.sleep(0.2)


def job_records(config: str) -> Dict[str, dict]:
    """Every job ``fractui jobs`` lists, by its ref."""
    return {j["ref"]: j for j in json.loads(fractui(config, "jobs", "--json").stdout)["jobs"]}


@pytest.mark.parametrize("agent", [pytest.param("image", marks=pytest.mark.slow), "upload"])
def test_a_host_in_a_container_runs_mig_and_capped_jobs_and_survives_its_stream_killed(
        podman, box, tmp_path, agent):
    name = "ctr-%s" % agent
    extra = dict(agent="image") if agent == "image" else {}
    config = write_config(tmp_path, exec_host(box, name, watchdog_grace_s=0.5, **extra))
    state_dir = "/var/lib/fractui-%s" % name

    host = status(config)[name]
    assert host["state"] == "online", host["error"]
    assert [g["name"] for g in host["gpus"]] == ["NVIDIA A100-SXM4-80GB", "NVIDIA L4"]
    assert host["agent"]["backend"] == "sim"
    # the agent runs inside the container: from the image's zipapp, or the one put there
    [(_, daemon)] = in_box(podman, box, "daemon", state_dir)
    if agent == "image":
        assert daemon[1] == IMAGE_AGENT
    else:
        assert daemon[1].startswith("/var/cache/fractui/agent-") and daemon[1].endswith(".pyz")

    done = fractui(config, "mig", name, "0", "3g.40gb", "--yes")
    assert done.returncode == 0, done.stderr
    assert "create 3g.40gb at slot" in done.stdout
    [instance] = status(config)[name]["gpus"][0]["instances"]
    assert instance["profile"] == "3g.40gb"

    # a capped job, and one that outgrows its cap: the agent's watchdog in the container stops it
    launched = fractui(config, "launch", name, "1", "--memory-mib", "2048", "--env",
                       "PYTHONPATH=%s" % IMAGE_CODE, "--json", "--", *SIMLOAD, "--mem-mib",
                       "1000", "--seconds", "600", "--util-swing", "0")
    assert launched.returncode == 0, launched.stderr
    job = json.loads(launched.stdout)
    assert job["state"] == "running"
    [(job_pid, _)] = until_true(lambda: in_box(podman, box, "remote_agent.simload", "600"),
                                "the job runs inside the container")
    greedy = fractui(config, "launch", name, "1", "--memory-mib", "1024", "--env",
                     "PYTHONPATH=%s" % IMAGE_CODE, "--json", "--", *SIMLOAD, "--mem-mib", "900",
                     "--grow-to", "4000", "--seconds", "30", "--util-swing", "0")  # over 1 s in
    assert greedy.returncode == 0, greedy.stderr
    greedy_ref = json.loads(greedy.stdout)["ref"]  # (its stop is looked for at the end)

    with Fleet(load_config(config), reconnect_max_s=0.5) as fleet:
        fleet.wait_settled(60)
        session = fleet.session(name)
        assert session.status.state == "online", session.status.error
        assert session.status.uploaded is False  # in the image, or put there by status above
        states = States(session)

        # the exec stream killed here: podman exec, SIGKILL
        [pid] = here("podman", "exec", box, state_dir, "--stdio")
        os.kill(pid, signal.SIGKILL)
        said = states.drop_then_back("exec: podman was killed by SIGKILL")
        assert said.startswith("connection lost:")
        assert session.status.jobs[job["id"]]["state"] == "running"
        assert in_box(podman, box, "remote_agent.simload", "600")[0][0] == job_pid

        # the stream killed in there: the agent's bridge, SIGKILL
        del states.seen[:]
        [(bridge, _)] = in_box(podman, box, "serve", "--stdio", state_dir)
        podman.run(["exec", box, PYTHON, "-c", "import os; os.kill(%d, 9)" % bridge])
        states.drop_then_back("exec: podman exited with status 137")
        assert session.status.jobs[job["id"]]["state"] == "running"
        assert in_box(podman, box, "remote_agent.simload", "600")[0][0] == job_pid
        assert session.call("inventory")["gpus"][1]["name"] == "NVIDIA L4"

    def greedy_stopped() -> Optional[Dict[str, dict]]:
        listed = job_records(config)
        return listed if listed[greedy_ref]["state"] != "running" else None

    jobs = until_true(greedy_stopped, "the greedy job stopped", 60)
    assert jobs[job["ref"]]["state"] == "running"
    stopped = jobs[greedy_ref]
    assert "exceeded its 1024 MiB cap" in (stopped.get("reason") or ""), stopped
    assert fractui(config, "stop", job["ref"], "--grace", "1").returncode == 0


@pilot_test
async def test_the_tui_shows_a_host_in_a_container_go_offline_and_come_back(podman, box, tmp_path):
    config = load_config(write_config(tmp_path, exec_host(box, "ctr-tui", agent="image")))
    store = open_store(sqlite_url(str(tmp_path / "store.db")))
    source = LiveSource(config, store)
    source.start()
    app = FractuiApp(source, config)
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: [s.state for s in fleet_screen(
                app).statuses.values()] == ["online"], "the exec host online on screen", 60)
            _, a100 = gpu_line(app, "ctr-tui", 0)
            _, l4 = gpu_line(app, "ctr-tui", 1)
            assert (a100.mig, l4.mig, l4.memory_mib, l4.stale) == (True, False, 23034, False)
            assert "L4" in l4.model and "A100" in a100.model
            [pid] = here("podman", "exec", box, "/var/lib/fractui-ctr-tui", "--stdio")
            os.kill(pid, signal.SIGKILL)  # the screen says so, and the host comes back

            def shown() -> HostStatus:
                return fleet_screen(app).statuses["ctr-tui"]

            await until(pilot, lambda: shown().state == "offline" and "exec: podman was killed "
                        "by SIGKILL" in (shown().error or ""), "offline on screen with the "
                        "reason", 30)
            await until(pilot, lambda: shown().state == "online", "online again on screen", 60)
    finally:
        source.stop()
        store.close()


def test_doctor_warns_of_a_state_dir_in_the_containers_own_layer_with_the_fix(
        podman, box, tmp_path):
    """A container's state dir on its own overlay layer loses the agent's job records with the
    container: doctor warns and says to mount a volume there; on a volume it is ok."""
    kept = tmp_path / "kept"
    kept.mkdir(mode=0o700)
    with_volume = podman.start_container("-v", "%s:/var/lib/fractui-kept" % kept)
    try:
        config = write_config(tmp_path, exec_host(box, "layer"),
                              exec_host(with_volume, "kept"))
        done = fractui(config, "doctor", "--json")
        checks = {r["name"]: {c["name"]: c for c in r["checks"]}
                  for r in json.loads(done.stdout)["hosts"]}
        layer = checks["layer"]["state dir"]
        assert layer["status"] == "warn", layer
        assert layer["detail"].startswith(
            "/var/lib/fractui-layer is on overlay, the container's own layer: the agent's job "
            "records and logs go with the container")
        assert layer["fix"].startswith("mount a volume at /var/lib/fractui-layer")
        assert checks["kept"]["state dir"]["status"] == "ok", checks["kept"]["state dir"]
        assert checks["kept"]["state dir"]["detail"].startswith("/var/lib/fractui-kept on ")
    finally:
        podman.remove(with_volume)


def test_a_target_found_by_lookup_follows_a_replaced_container(podman, tmp_path):
    label = "node=n1-%s" % os.urandom(4).hex()
    lookup = ["podman", "ps", "--filter", "label=%s" % label, "--format", "{{.Names}}"]
    config = write_config(tmp_path, dict(
        name="moving", transport="exec", exec=["podman", "exec", "-i", "{target}"],
        exec_target=lookup, agent="image", sim="1xL4"))
    started: List[str] = []

    def start() -> str:
        started.append(podman.start_container("--label", label))
        return started[-1]

    try:
        nobody = status(config)["moving"]
        assert nobody["state"] == "offline"
        assert "found no target: it printed nothing" in nobody["error"]
        doctor = fractui(config, "doctor", "--json")
        assert doctor.returncode == 1
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["hosts"][0]["checks"]}
        assert checks["target"]["status"] == "fail" and checks["python"]["status"] == "skip"

        first = start()
        with Fleet(load_config(config), reconnect_max_s=0.5) as fleet:
            fleet.wait_settled(60)
            session = fleet.session("moving")
            assert session.status.state == "online", session.status.error
            assert in_box(podman, first, "serve", "--stdio")
            states = States(session)
            podman.remove(first)  # the pod is replaced: a new name, the same label
            second = start()
            states.wait(lambda seen: any(s == "offline" for s, _ in seen), "offline")
            states.wait(lambda seen: seen[-1][0] == "online", "online again")
            assert in_box(podman, second, "serve", "--stdio")
            third = start()  # two match: which is meant cannot be told
            del states.seen[:]
            [(bridge, _)] = in_box(podman, second, "serve", "--stdio")
            podman.run(["exec", second, PYTHON, "-c", "import os; os.kill(%d, 9)" % bridge])
            states.wait(lambda seen: any("found 2 targets" in (e or "") for _, e in seen),
                        "offline with two targets")
            error = next(e for _, e in states.seen if "found 2 targets" in (e or ""))
            assert "found 2 targets (" in error and second in error and third in error
            podman.remove(third)
            states.wait(lambda seen: seen[-1][0] == "online", "online with one target")

        doctor = fractui(config, "doctor", "--json")
        assert doctor.returncode == 0, doctor.stdout
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["hosts"][0]["checks"]}
        assert checks["target"] == dict(name="target", status="ok", detail="%s (from "
                                        "exec_target)" % second, fix=None)
        assert [checks[n]["status"] for n in ("exec", "python", "agent")] == ["ok"] * 3
        # no volume here, unlike a DaemonSet's hostPath: the records go with the container
        assert checks["state dir"]["status"] == "warn", checks["state dir"]
    finally:
        for name in started:
            podman.remove(name)


# A python for the upload helper (and the checks, run by the same python) with an audit hook
# of the test's: the body of ``hook(event, args)``, after the helper's arguments are its own
# (sys.argv[1], the agent's path).
HOOKED_PYTHON = """\
#!%s
import errno, glob, os, signal, sys, time
def hook(event, args):
%s
sys.addaudithook(hook)
code = sys.argv[2]
sys.argv = ['-c'] + sys.argv[3:]
exec(compile(code, '<string>', 'exec'), {'__name__': '__main__'})
"""

# The upload helper held at its partial's fchmod (its partial whole, its lock held), for the
# test to cut it there
HELD_PYTHON = HOOKED_PYTHON % (PYTHON, """\
    if event == 'os.chmod' and isinstance(args[0], int):
        time.sleep(600)""")

# The upload helper's partials, each unwritten for two hours by its mtime (past
# PARTIAL_STALE_S), in the folder of argv[1]
AGED = """\
import os, re, sys, time
for name in os.listdir(sys.argv[1]):
    if re.fullmatch(%r, name):
        then = time.time() - 7200
        os.utime(os.path.join(sys.argv[1], name), (then, then), follow_symlinks=False)
""" % PARTIAL_NAME.pattern


def hooked_python(tmp_path, hook: str) -> str:
    """A python here whose audit hook's body is ``hook`` (HOOKED_PYTHON)."""
    python = tmp_path / "hooked-python"
    python.write_text(HOOKED_PYTHON % (sys.executable, hook))
    python.chmod(0o755)
    return str(python)


@pytest.mark.parametrize("cut", ["SIGTERM", "SIGKILL"])
def test_an_upload_cut_in_a_container_leaves_no_partial_of_ours(podman, box, tmp_path, cut,
                                                                  caplog):
    """An upload held with its partial whole while another finishes: the other leaves its
    partial (a live upload's, its lock held), though unwritten past PARTIAL_STALE_S; then it
    is cut. A SIGTERM it lives through, and removes its partial; one a SIGKILL left is removed
    by the next upload, and said in the log. A link, another user's file and a name not ours,
    though alike and as old, stay."""
    cache = "/var/cache/fractui-cut-%s" % cut.lower()
    held = "/tmp/held-python-%s" % cut.lower()
    archive = build_agent_archive()
    podman.run(["exec", "-i", box, PYTHON, "-c", (
        "import os, sys\nopen(%r, 'w').write(sys.stdin.read())\nos.chmod(%r, 0o755)\n"
        "os.makedirs(%r, 0o700)\nopen('/tmp/kept', 'w').close()\n"
        "os.symlink('/tmp/kept', %r)\nopen(%r, 'w').close()\nos.chown(%r, 1234, 1234)\n"
        "open(%r, 'w').close()") % (
            held, held, cache, cache + "/.agent-linkxxxx.part", cache + "/.agent-otherxxx.part",
            cache + "/.agent-otherxxx.part", cache + "/.agent-notour.part")],
        input_text=HELD_PYTHON)

    def transport(python: str) -> ExecTransport:
        config = load_config(write_config(tmp_path, exec_host(box, "cut", agent_cache=cache,
                                                              python=python)))
        way = ExecTransport(config.hosts[0], config.ssh)
        way.open()
        return way

    def partials() -> List[str]:
        names = podman.run(["exec", box, PYTHON, "-c", "import os; print(*os.listdir(%r))"
                            % cache]).stdout.split()
        return sorted(n for n in names if PARTIAL_NAME.fullmatch(n))

    alike = [".agent-linkxxxx.part", ".agent-otherxxx.part"]
    ended: List[BaseException] = []

    def upload_held() -> None:
        try:
            transport(held).deploy(archive)
        except AgentProcessError as err:
            ended.append(err)

    first = threading.Thread(target=upload_held)
    first.start()
    live = until_true(lambda: [n for n in partials() if n not in alike], "the held partial")
    podman.run(["exec", box, PYTHON, "-c", AGED, cache])
    with caplog.at_level(logging.INFO, logger="fractui.fleet"):
        assert transport(PYTHON).deploy(archive)[1] is True
        assert partials() == sorted(alike + live)  # (the held upload's lives on)
        pid, = [p for p, _ in in_box(podman, box, held)]
        podman.run(["exec", box, PYTHON, "-c", "import os; os.kill(%d, %d)" % (
            pid, getattr(signal, cut))])
        first.join(60)
        assert len(ended) == 1 and "the exec stream ended before its answer" in str(ended[0])
        assert partials() == sorted(alike + (live if cut == "SIGKILL" else []))
        podman.run(["exec", box, PYTHON, "-c", "import os; os.unlink(%r)" % (
            "%s/%s" % (cache, archive.name))])
        assert transport(PYTHON).deploy(archive)[1] is True
    assert partials() == alike
    said = [r.getMessage() for r in caplog.records if "half uploaded" in r.getMessage()]
    assert said == ["cut: removed %s/%s, an agent left half uploaded" % (cache, live[0])
                    ] * (cut == "SIGKILL"), said
    kept = podman.run(["exec", box, PYTHON, "-c", "import os; print(sorted(os.listdir(%r)), "
                       "os.path.exists('/tmp/kept'))" % cache]).stdout.strip()
    assert kept == "%r True" % sorted(alike + [".agent-notour.part", archive.name])


FAKE_PYTHON = """\
import os, sys
if sys.argv[2:3] == ["-c"]:  # the checks (python3 -c CODE): answered as python would
    os.execv(sys.executable, [sys.executable] + sys.argv[2:])
print("Welcome to a shell that is not the agent")
sys.exit(3)
"""


def test_exec_argv_that_cannot_reach_an_agent_is_offline_with_its_words(tmp_path):
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE_PYTHON)
    config = write_config(
        tmp_path,
        dict(name="missing", transport="exec", exec=["no-such-exec-program-h17"], sim="1xL4"),
        dict(name="fails", transport="exec", exec=[sys.executable, "-c", "import sys; "
                                                   "sys.exit('no such pod')"], sim="1xL4"),
        dict(name="garbage", transport="exec", exec=["echo", "hello"], sim="1xL4"),
        dict(name="chatty", transport="exec", exec=[sys.executable, str(fake)], sim="1xL4",
             agent="image", agent_path="/nowhere/agent.pyz"))
    hosts = status(config)
    assert {n: h["state"] for n, h in hosts.items()} == dict.fromkeys(
        ("missing", "fails", "garbage", "chatty"), "offline")
    assert hosts["missing"]["error"] == (
        "the exec program no-such-exec-program-h17 is not found on this machine (exec = "
        "no-such-exec-program-h17)")
    assert hosts["fails"]["error"] == "python3 -c failed on fails: no such pod"
    assert hosts["garbage"]["error"].startswith(
        "python3 on garbage printed \"hello python3 -c import sys;")
    assert hosts["chatty"]["error"] == (
        "the agent on chatty did not answer: the agent closed the connection (exec: %s "
        "exited with status 3)" % sys.executable)
    assert "Welcome to a shell" not in hosts["chatty"]["error"]  # not JSON: never taken as one
    doctor = fractui(config, "doctor", "--json")
    assert doctor.returncode == 1
    reports = {r["name"]: {c["name"]: c for c in r["checks"]}
               for r in json.loads(doctor.stdout)["hosts"]}
    assert reports["missing"]["exec"]["status"] == "fail"
    assert reports["fails"]["python"]["detail"] == "python3 -c failed on fails: no such pod"
    trust = fractui(config, "trust", "garbage")
    assert (trust.returncode, trust.stderr.strip()) == (
        2, "fractui: garbage is an exec host: it has no host key")


def test_an_exec_host_fails_in_words_while_another_thread_is_importing_paramiko(
        tmp_path, monkeypatch):
    """A fleet of SSH and exec hosts: the SSH host's thread imports paramiko while the exec
    host's connect fails. paramiko then stands in sys.modules half made, without its error
    class yet; the exec host must still read offline with its words, its worker alive to
    retry, never a thread killed by an AttributeError with the host stuck connecting."""
    for half_made in ("paramiko", "paramiko.ssh_exception"):
        monkeypatch.setitem(sys.modules, half_made, type(sys)(half_made))
    config = load_config(write_config(tmp_path, dict(
        name="pod", transport="exec", exec=["no-such-exec-program-h17"], sim="1xL4")))
    session = HostSession(config.hosts[0], config.ssh, build_agent_archive)
    session.start()
    try:
        assert session.settled.wait(30), session.status
        assert (session.status.state, session.status.error) == (
            "offline", "the exec program no-such-exec-program-h17 is not found on this machine "
            "(exec = no-such-exec-program-h17)")
        assert session._thread.is_alive()
    finally:
        session.stop()


# Exec hosts without podman: ``env`` as the exec program runs the agent's words on this machine.

def here_by_env(tmp_path, name: str, **extra) -> dict:
    return dict(dict(name=name, transport="exec", exec=["env"], python=sys.executable,
                     sim="1xL4", state_dir=str(tmp_path / "state" / name),
                     agent_cache=str(tmp_path / "cache" / name)), **extra)


def test_the_agent_is_put_in_place_through_the_exec_argv_once(tmp_path):
    host = here_by_env(tmp_path, "via-env")
    config = load_config(write_config(tmp_path, host))
    archive = build_agent_archive()
    try:
        for uploaded in (True, False):
            with Fleet(config) as fleet:
                fleet.wait_settled(60)
                status_now = fleet.session("via-env").status
                assert status_now.state == "online", status_now.error
                assert status_now.uploaded is uploaded
        cache = tmp_path / "cache" / "via-env"
        assert os.listdir(cache) == [archive.name]  # no part left behind
        assert (cache / archive.name).read_bytes() == archive.data
        assert oct((cache / archive.name).stat().st_mode & 0o777) == "0o644"
    finally:
        stop_host(host["state_dir"])


def test_a_file_under_the_agents_name_is_replaced_through_exec_and_never_run(tmp_path):
    """The exec deploy checks the file by its hash, as the SSH one does (test_fleet_hosts)."""
    host = here_by_env(tmp_path, "planted")
    archive = build_agent_archive()
    cache = tmp_path / "cache" / "planted"
    cache.mkdir(parents=True)
    mark = tmp_path / "planted-ran"
    (cache / archive.name).write_text("open(%r, 'w').write('ran')\n" % str(mark))
    try:
        said = status(write_config(tmp_path, host))["planted"]
        assert said["state"] == "online", said
        assert not mark.exists()
        assert (cache / archive.name).read_bytes() == archive.data
    finally:
        stop_host(host["state_dir"])


# An exec program that runs the agent's words here, and plays another user once: right after the
# first check of the agent's folder (which did not exist yet) it makes that folder, writable by
# all, as another user could under a shared directory.
RACE = """\
import os, subprocess, sys
done = subprocess.run(sys.argv[2:]).returncode
if any("check_tree(" in word for word in sys.argv) and not os.path.exists(sys.argv[1]):
    os.makedirs(sys.argv[1])
    os.chmod(sys.argv[1], 0o777)
sys.exit(done)
"""


def test_a_folder_made_by_another_between_the_check_and_the_upload_is_refused(tmp_path):
    race = tmp_path / "race.py"
    race.write_text(RACE)
    cache = tmp_path / "cache" / "raced"
    host = here_by_env(tmp_path, "raced", exec=[sys.executable, str(race), str(cache)])
    said = status(write_config(tmp_path, host))["raced"]
    assert said["state"] == "offline"
    assert said["error"] == (
        "cannot put the agent in {c} on raced: refusing agent_cache {c}: {c} is writable by its "
        "group and all users (mode 0777), who could replace what the agent reads there; fix it "
        "with: chmod go-w {c}".format(c=cache)), said
    assert not os.path.exists(host["state_dir"])  # the agent never ran


# RACE, which also puts a link of the other user's at the name of the agent being uploaded,
# right after the upload has written it (the hook, put before the upload's code: at its fsync).
RACE_LINK = """\
import os, subprocess, sys
folder, target = sys.argv[1], sys.argv[2]
theirs = os.path.join(folder, 'theirs')
HOOK = (
    'import os\\n'
    'sync = os.fsync\\n'
    'def synced(fd):\\n'
    '    sync(fd)\\n'
    '    for name in os.listdir(%r):\\n'
    '        if name.endswith(".part") and os.path.islink(%r):\\n'
    '            os.replace(%r, os.path.join(%r, name))\\n'
    'os.fsync = synced\\n') % (folder, theirs, theirs, folder)
words = sys.argv[3:]
if any("mkstemp" in word for word in words):
    words[2] = HOOK + words[2]
done = subprocess.run(words).returncode
if any("check_tree(" in word for word in words) and not os.path.exists(folder):
    os.makedirs(folder)
    os.chmod(folder, 0o777)
    os.symlink(target, theirs)
sys.exit(done)
"""


def test_a_link_put_in_place_of_the_agent_as_it_is_uploaded_changes_no_other_file(tmp_path):
    """Where the folder was made by another user after it was checked (above), the upload
    writes the agent there, and that user may put a link in its place before its mode is set:
    set by name, it gave the file the link named 0644 (as root with sudo, or in a pod: any of
    root's; tried so, a plain user winning 77 uploads of 100 with a loop of renames)."""
    race = tmp_path / "race.py"
    race.write_text(RACE_LINK)
    cache = tmp_path / "cache" / "raced"
    target = tmp_path / "roots-alone"
    target.write_text("root's\n")
    target.chmod(0o600)
    host = here_by_env(tmp_path, "raced", exec=[sys.executable, str(race), str(cache),
                                                str(target)])
    said = status(write_config(tmp_path, host))["raced"]
    assert said["state"] == "offline" and "refusing agent_cache" in said["error"], said
    assert os.readlink(cache / build_agent_archive().name) == str(target)  # the link was put
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert not os.path.exists(host["state_dir"])  # the agent never ran


CUT_STDIN = """\
import subprocess, sys
data = sys.stdin.buffer.read()
sys.exit(subprocess.run(sys.argv[1:], input=data[:len(data) // 2]).returncode)
"""


def test_an_upload_that_cannot_be_written_or_arrives_cut_is_told(tmp_path):
    cut = tmp_path / "cut.py"
    cut.write_text(CUT_STDIN)
    size = len(build_agent_archive().data)
    said = status(write_config(
        tmp_path, here_by_env(tmp_path, "cut", exec=[sys.executable, str(cut)]),
        here_by_env(tmp_path, "unwritable", agent_cache="/proc/fractui-cache")))
    assert said["cut"]["error"] == (
        "the agent put through exec on cut arrived damaged: %d bytes of %d came, not the ones "
        "sent (the exec program changed or cut its stdin)" % (size // 2, size))
    assert said["unwritable"]["error"].startswith(
        "cannot put the agent in /proc/fractui-cache on unwritable: ")
    assert said["unwritable"]["error"].endswith("(set agent_cache to a writable directory)")
    assert not os.path.exists(tmp_path / "state")  # no agent started


def deployed(tmp_path, name: str, **extra) -> Tuple[dict, Any]:
    """A host here (``here_by_env``) and what one deploy to it did: its answer, or the
    AgentProcessError it raised."""
    host = here_by_env(tmp_path, name, **extra)
    config = load_config(write_config(tmp_path, host))
    way = ExecTransport(config.hosts[0], config.ssh)
    way.open()
    try:
        return host, way.deploy(build_agent_archive())
    except AgentProcessError as err:
        return host, err


def partials_in(folder: str) -> List[str]:
    return sorted(n for n in os.listdir(folder) if PARTIAL_NAME.fullmatch(n))


@pytest.mark.parametrize("refused", ["ENOLCK", "ENOSYS"])
def test_an_upload_to_a_folder_with_no_locks_is_put_in_place(tmp_path, refused):
    """Where flock is refused (NFS with no lock manager: ENOLCK; Lustre mounted noflock:
    ENOSYS) the agent is put in place unlocked. Before, each upload failed there, its
    partial left: a later upload may then only sweep it by its age (below)."""
    python = hooked_python(tmp_path, """\
    if event == 'fcntl.flock':
        raise OSError(errno.%s, os.strerror(errno.%s))""" % (refused, refused))
    host, done = deployed(tmp_path, "nolock", python=python)
    path = os.path.join(host["agent_cache"], build_agent_archive().name)
    assert done == (path, True)
    assert os.listdir(host["agent_cache"]) == [os.path.basename(path)]


def test_a_partial_no_lock_holds_is_swept_only_once_unwritten_past_its_time(tmp_path, caplog):
    """A partial of ours that no lock holds is not yet one left behind: an older fractui's
    upload helper (it takes no lock; versions mixed as fractui is rolled out) or one on
    another machine of a shared volume (flock is that machine's) may be writing it. The sweep
    takes only one also unwritten past PARTIAL_STALE_S, by its mtime; before, it took any
    whose lock it could take."""
    cache = tmp_path / "cache" / "mixed"
    cache.mkdir(parents=True, mode=0o700)
    (cache / ".agent-writingx.part").write_bytes(b"half")
    (cache / ".agent-leftxxxx.part").write_bytes(b"half")
    then = time.time() - PARTIAL_STALE_S - 60
    os.utime(cache / ".agent-leftxxxx.part", (then, then))
    with caplog.at_level(logging.INFO, logger="fractui.fleet"):
        host, done = deployed(tmp_path, "mixed")
    assert done[1] is True
    assert partials_in(str(cache)) == [".agent-writingx.part"]
    said = [r.getMessage() for r in caplog.records if "half uploaded" in r.getMessage()]
    assert said == ["mixed: removed %s, an agent left half uploaded" % (
        cache / ".agent-leftxxxx.part")], said


def test_a_sigterm_as_the_new_partial_is_locked_leaves_no_partial(tmp_path):
    """A SIGTERM just after ``mkstemp`` made the partial, as its lock is taken: before, that
    came before the try that removes the partial on any failure, and the partial was left."""
    python = hooked_python(tmp_path, """\
    if event == 'fcntl.flock':
        os.kill(os.getpid(), signal.SIGTERM)""")
    host, done = deployed(tmp_path, "termed", python=python)
    assert isinstance(done, AgentProcessError)
    assert "the exec stream ended before its answer: env exited with status 143" in str(done)
    assert os.listdir(host["agent_cache"]) == []


@pytest.mark.skipif(shutil.which("strace") is None, reason="the signal is sent by strace")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_as_the_agent_is_renamed_into_place_is_no_folder_error(tmp_path, sig):
    """A SIGTERM (or a SIGINT, a ^C's) that comes during the rename into place (strace sends
    it as the rename is made): the agent is in place; the helper ends by the signal, said as
    the stream's end. Before, its handler's exception came just after the rename, whose
    partial's removal then failed: the upload read as the folder's error "No such file or
    directory", with the folder's advice; a SIGINT, not held, a KeyboardInterrupt's
    traceback."""
    renames = "rename,renameat,renameat2"
    host, done = deployed(tmp_path, "renamed", exec=[  # (no bytecode written: its rename
        "strace", "-f", "-qq", "-o", "/dev/null", "-E", "PYTHONDONTWRITEBYTECODE=1",  # first)
        "-e", "trace=" + renames, "-e", "inject=%s:signal=%s" % (renames, sig)])
    assert isinstance(done, AgentProcessError)
    assert str(done).endswith("the exec stream ended before its answer: strace was killed by "
                              "%s; the next connect tries again" % sig), done
    assert deployed(tmp_path, "renamed")[1][1] is False  # (in place, its hash the agent's)


def test_a_write_error_whose_partial_a_sweep_took_is_said_as_itself(tmp_path):
    """The partial's write fails (here: its fchmod, EIO) after another removed it: the
    error said is the write's. Before, the removal of the partial, gone, raised in its
    place: "No such file or directory"."""
    python = hooked_python(tmp_path, """\
    if event == 'os.chmod' and isinstance(args[0], int):
        for part in glob.glob(os.path.join(os.path.dirname(sys.argv[1]), '.agent-*.part')):
            os.unlink(part)
        raise OSError(errno.EIO, os.strerror(errno.EIO))""")
    host, done = deployed(tmp_path, "eio", python=python)
    assert str(done) == "cannot put the agent in %s on eio: [Errno 5] Input/output error (set " \
        "agent_cache to a writable directory)" % host["agent_cache"], done


# An exec program that runs the agent's words here, but ends mid-upload as its stream would:
# it passes on part of the agent, kills the upload helper (nothing on stderr), then, given
# "kill", kills itself; given "137", ends with the status podman and kubectl exec give when the
# far process was killed.
DIES = """\
import os, subprocess, sys
how, words = sys.argv[1], sys.argv[2:]
if not any("mkstemp" in word for word in words):
    sys.exit(subprocess.run(words).returncode)
helper = subprocess.Popen(words, stdin=subprocess.PIPE)
helper.stdin.write(sys.stdin.buffer.read(1000))
helper.stdin.flush()
helper.kill()
helper.wait()
if how == "kill":
    os.kill(os.getpid(), 9)
sys.exit(137)
"""


def test_an_exec_stream_that_ends_mid_upload_is_said_as_the_streams_not_the_folders(tmp_path):
    """As an SSH link that drops (test_agent_portability): the folder advice only for the
    upload helper's own folder errors (test_an_upload_that_cannot_be_written_...)."""
    dies = tmp_path / "dies.py"
    dies.write_text(DIES)
    said = status(write_config(tmp_path, *(
        here_by_env(tmp_path, name, exec=[sys.executable, str(dies), how])
        for name, how in (("killed", "kill"), ("gone", "137")))))
    for name, ended in (("killed", "was killed by SIGKILL"), ("gone", "exited with status 137")):
        assert said[name]["error"] == (
            "cannot put the agent in %s on %s: the exec stream ended before its answer: %s %s; "
            "the next connect tries again" % (tmp_path / "cache" / name, name, sys.executable,
                                              ended)), said[name]
    assert not os.path.exists(tmp_path / "state")  # no agent started


def test_an_image_whose_agent_speaks_another_protocol_is_refused_with_what_to_do(tmp_path):
    old = tmp_path / "old" / "remote_agent"
    shutil.copytree(os.path.dirname(remote_agent.__file__), old,
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = old / "__init__.py"
    init.write_text(init.read_text().replace("PROTOCOL_VERSION = %d" % PROTOCOL_VERSION,
                                             "PROTOCOL_VERSION = %d" % (PROTOCOL_VERSION + 1)))
    image = tmp_path / "image"
    image.mkdir()
    agent = write_archive(build_agent_archive(str(old)), str(image))
    host = here_by_env(tmp_path, "old-image", agent="image", agent_path=agent)
    config = write_config(tmp_path, host)
    try:
        said = status(config)["old-image"]
        assert said["state"] == "offline"
        assert said["error"] == (
            "the agent on old-image refused hello: this agent speaks protocol %d, not %d (its "
            "agent is the image's, %s: use an image with fractui %s's agent, or leave out agent "
            "= \"image\" to have fractui upload its own)" % (
                PROTOCOL_VERSION + 1, PROTOCOL_VERSION, agent, fractui_version))
        assert not (tmp_path / "cache" / "old-image").exists()  # nothing was uploaded
    finally:
        stop_host(host["state_dir"])


def test_what_exec_target_prints_must_name_one_target(tmp_path):
    def looked_up(name: str, lookup: List[str]) -> dict:
        return here_by_env(tmp_path, name, exec=["env", "{target}"], exec_target=lookup)

    hosts = [
        looked_up("one", ["echo", "FRACTUI_TARGET=one"]),  # env takes it as a variable
        looked_up("none", ["true"]),
        looked_up("two", [sys.executable, "-c", 'print("pod/a"); print("pod/b")']),
        looked_up("option", ["echo", "--privileged"]),
        looked_up("refused", [sys.executable, "-c", 'import sys; sys.exit("Error from '
                              'server (Forbidden): pods is forbidden")']),
        looked_up("missing", ["no-such-lookup-h17"]),
    ]
    try:
        said = status(write_config(tmp_path, *hosts))
        assert said["one"]["state"] == "online", said["one"]["error"]
        errors = {n: h["error"] for n, h in said.items() if n != "one"}
        python = "%s -c" % sys.executable
        assert errors == {
            "none": "exec_target (true) found no target: it printed nothing",
            "two": "exec_target (%s 'print(\"pod/a\"); print(\"pod/b\")') found 2 targets "
                   "(pod/a, pod/b): it must print one line" % python,
            "option": "exec_target (echo --privileged) printed '--privileged', which cannot "
                      "name a target",
            "refused": "exec_target (%s 'import sys; sys.exit(\"Error from server (Forbidden): "
                       "pods is forbidden\")') failed with status 1: Error from server "
                       "(Forbidden): pods is forbidden" % python,
            "missing": "exec_target (no-such-lookup-h17): cannot start no-such-lookup-h17: "
                       "program not found"}
    finally:
        stop_host(hosts[0]["state_dir"])


def test_doctor_over_exec_checks_each_layer_and_reads_the_state_dirs_filesystem(tmp_path):
    shm = "/dev/shm/fractui-test-%s" % os.urandom(4).hex()
    host = here_by_env(tmp_path, "shm", state_dir=shm + "/state")
    try:
        doctor = fractui(write_config(tmp_path, host), "doctor", "--json")
        assert doctor.returncode == 0, doctor.stdout
        [report] = json.loads(doctor.stdout)["hosts"]
        checks = {c["name"]: (c["status"], c["detail"]) for c in report["checks"]}
        assert [c["name"] for c in report["checks"]][:4] == ["config", "exec", "python", "agent"]
        assert checks["exec"] == ("ok", "env found: env")
        assert checks["python"] == ("ok", "%s runs the agent" % sys.executable)
        assert checks["lingering"][0] == "ok" and "no login session" in checks["lingering"][1]
        assert checks["state dir"] == ("ok", "%s/state on tmpfs" % shm)  # /dev/shm's mount
    finally:
        stop_host(host["state_dir"])
        shutil.rmtree(shm, ignore_errors=True)
