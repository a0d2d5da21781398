"""Who may do what, as real OS users running ``fractui`` against a real store (the tests run as
root; each verb here runs as a throwaway plain account). On SQLite the file's permissions are
the boundary: a user who cannot read the store cannot do anything; one who shares it through
its group, without owning it, is no admin, and the config's team members say what they may do.
The identity is the process's user by uid: $USER says root in every run here, and is ignored."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fractui import words
from fractui.config import QueueConfig, StoreSettings, TeamConfig
from fractui.store import SqliteStore, Slot, open_store
from tests import acl
from tests.conftest import REPO
from tests.localfleet import local_fleet  # noqa: F401 - a fixture
from tests.test_job_supervision import wait_until
from tests.sshd import free_port
from tests.test_pg_guard import LEAST, _guarded
from tests.test_store_damage import fractui, plain_dir  # noqa: F401 - plain_dir: a fixture
from tests.tui_probe import Probe

HOST = socket.gethostname()


def running_by_hand(store, job_id: int) -> None:
    """A pending job made running on gpu-a as an admin's placement and its launch would."""
    store.place(job_id, Slot("gpu-a", (0,), memory_mib=100), "root@test", "test", manual=True)
    store.started(job_id, "1", None, "root@test", "test")


@pytest.fixture(autouse=True)
def _user_says_root(monkeypatch):
    """What a user could forge: the environment's names. The store must not believe them."""
    monkeypatch.setenv("USER", "root")
    monkeypatch.setenv("LOGNAME", "root")


def shared_store(folder: Path, user: str) -> Path:
    """A store root owns, shared with ``user``'s group (0660, in a setgid 2770 directory so
    its -wal and -shm are the group's too): the user reads and writes it without owning it."""
    gid = pwd.getpwnam(user).pw_gid
    state = folder / "state"
    state.mkdir()
    store = state / "store.db"
    SqliteStore(str(store)).close()
    for path, mode in ((state, 0o2770), (store, 0o660)):
        os.chown(path, 0, gid)
        path.chmod(mode)
    return store


def write_config(folder: Path, store: Path, members: dict, hosts: bool = False) -> Path:
    """Teams vision and nlp with these members, a queue for each; with ``hosts``, one host at
    a port nothing listens on (a verb that reached it would say it cannot connect)."""
    text = '[scheduler]\nstore = "%s"\n' % store
    for team in ("vision", "nlp"):
        text += '[[teams]]\nname = "%s"\n' % team
        if team in members:
            text += "members = %s\n" % json.dumps(members[team])
    text += ('[[queues]]\nname = "v"\ngpu = 0.5\nteam = "vision"\n'
             '[[queues]]\nname = "n"\ngpu = 0.5\nteam = "nlp"\n')
    if hosts:
        text += ('[ssh]\nconnect_timeout = 1\n'
                 '[[hosts]]\nname = "gpu-x"\nhost = "127.0.0.1"\nport = %d\n' % free_port())
    path = folder / ("hosts.toml" if hosts else "config.toml")
    path.write_text(text)
    path.chmod(0o644)
    return path


NO_SCHEDULER = "fractui: %s\n" % words.NO_SCHEDULER  # (none runs in these tests)


def refused(done: subprocess.CompletedProcess, words: str) -> None:
    assert (done.returncode, done.stdout) == (1, ""), done
    assert done.stderr == "fractui: %s\n" % words, done.stderr


def who(user: str, teams: str = "team vision") -> str:
    return "refused: you are %s (in %s, not an admin)" % (user, teams)


# fractui run with this machine's name set first, as a user may in namespaces of their own
IN_A_NAMESPACE = ("import socket, sys; socket.sethostname(sys.argv.pop(1)); "
                  "from fractui.cli import main; sys.exit(main())")


def test_a_machine_name_the_caller_set_names_no_other_user(tmp_path):
    """The audit's actor is the store's user @ this machine's name, and who submitted or asked
    is read before its last @ (model.submitter). The name is the kernel's, which any user may
    set to any bytes in a user and UTS namespace of their own (unshare -Ur -u, no privilege
    needed): on SQLite, where no guard holds the actor, a name `corp@head` made root's submit
    and cancel read as user `root@corp`'s — not root's in `jobs --user root` or the audit —
    and a name with an escape wrote it into the store. The where is the name with each @
    and each character not printable a `?`."""
    config = write_config(tmp_path, tmp_path / "store.db", {"vision": ["root"]})
    for verb in (["submit", "--queue", "v", "--", "/bin/true"], ["cancel", "1"]):
        done = subprocess.run(["unshare", "-Ur", "-u", sys.executable, "-c", IN_A_NAMESPACE,
                               "corp@head\x1b[2J", "--config", str(config), *verb],
                              capture_output=True, text=True, cwd=REPO, timeout=60,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done
    listed = fractui(config, ["jobs", "--all", "--user", "root", "--json"])
    assert listed.returncode == 0, listed
    assert [(j["id"], j["submitted_by"]) for j in json.loads(listed.stdout)["jobs"]] == [
        (1, "root@corp?head?[2J")]
    audit = SqliteStore(str(tmp_path / "store.db")).audit_log(1)
    assert [(e.actor, e.action) for e in audit] == [
        ("root@corp?head?[2J", "submit"), ("root@corp?head?[2J", "cancel")]


def test_a_user_who_cannot_read_the_store_can_do_nothing_and_is_told_so(plain_dir):
    state = plain_dir / "state"
    state.mkdir()
    state.chmod(0o755)
    store = state / "store.db"
    SqliteStore(str(store)).submit("v", "vision", "roots", ["x"], {"gpu": 0.5}, "test")
    assert (store.stat().st_uid, store.stat().st_mode & 0o777) == (0, 0o600)  # as made
    config = write_config(plain_dir, store, {"vision": ["nobody"]})
    data = store.read_bytes()
    for verb in (["jobs"], ["submit", "--queue", "v", "--", "x"], ["cancel", "1"],
                 ["requeue", "1"], ["audit"]):
        refused(fractui(config, verb, "nobody"), "store %s: cannot be read by nobody (mode "
                "0600, owner root)" % store)
    assert store.read_bytes() == data


def test_a_store_behind_a_directory_the_user_may_not_enter_is_said_so_not_taken_for_none(
        plain_dir):
    state = plain_dir / "state"
    state.mkdir()
    state.chmod(0o700)  # as fractui makes a store's directories
    store = state / "store.db"
    SqliteStore(str(store)).close()
    config = write_config(plain_dir, store, {"vision": ["nobody"]})
    for verb in (["jobs"], ["submit", "--queue", "v", "--", "x"]):
        refused(fractui(config, verb, "nobody"), "store %s: cannot be read by nobody: they "
                "may not enter its directory %s (mode 0700, owner root)" % (store, state))
    assert sorted(os.listdir(state)) == ["store.db"]


def test_team_members_act_on_their_teams_jobs_and_only_an_admin_steers(plain_dir, plain_user):
    name, _home = plain_user
    store = shared_store(plain_dir, name)
    config = write_config(plain_dir, store, {"vision": [name], "nlp": ["someone-else"]})
    with_hosts = write_config(plain_dir, store, {"vision": [name], "nlp": ["someone-else"]},
                              hosts=True)
    admin = SqliteStore(str(store))  # root's: the admin's
    try:
        theirs = admin.submit("n", "nlp", "theirs", ["x"], {"gpu": 0.5}, "root@test")
        running = admin.submit("v", "vision", "ours", ["x"], {"gpu": 0.5}, "root@test")
        running_by_hand(admin, running.id)
    finally:
        admin.close()
    assert not os.path.exists(str(store) + "-wal")  # the user's run makes its own

    mine = fractui(config, ["submit", "--queue", "v", "--", "x"], name)
    assert mine.returncode == 0, mine.stderr
    assert mine.stdout == "3 pending in queue v for team vision\n"
    refused(fractui(config, ["submit", "--queue", "n", "--", "x"], name),
            "%s; to submit to queue n of team nlp you must be in team nlp, or an admin"
            % who(name))
    refused(fractui(config, ["cancel", str(theirs.id)], name),
            "%s; to cancel job %d of team nlp you must be in team nlp, or an admin"
            % (who(name), theirs.id))
    refused(fractui(config, ["requeue", str(theirs.id)], name),
            "%s; to requeue job %d of team nlp you must be in team nlp, or an admin"
            % (who(name), theirs.id))
    refused(fractui(config, ["logs", str(theirs.id)], name),
            "%s; to read the output of job %d of team nlp you must be in team nlp, or an admin"
            % (who(name), theirs.id))
    for verb, words in (
            (["preempt", str(running.id)], "to preempt job %d" % running.id),
            (["preempt", "99"], "to preempt job 99"),  # (no such job: the verb is said first)
            (["place", "3", "gpu-x", "0"], "to place job 3"),
            (["move", "99", "gpu-x", "0"], "to move job 99"),
            (["move", str(running.id), "gpu-x", "0"], "to move job %d" % running.id),
            (["launch", "gpu-x", "0", "--memory-mib", "100", "--", "x"],
             "to launch a job on gpu-x"),
            (["stop", "gpu-x/j1"], "to stop gpu-x/j1"),
            (["mig", "gpu-x", "0", "1g.10gb", "--yes"], "to change MIG on gpu-x gpu 0"),
            (["mig", "gpu-x", "0", "--destroy", "MIG-1", "--yes"], "to change MIG on gpu-x gpu 0"),
            (["mig", "gpu-x", "0", "--mode", "off", "--yes"], "to change MIG on gpu-x gpu 0"),
            (["cordon", "gpu-x"], "to cordon, drain or uncordon gpu-x"),
            (["drain", "gpu-x", "1"], "to cordon, drain or uncordon gpu-x gpu1"),
            (["uncordon", "gpu-x"], "to cordon, drain or uncordon gpu-x"),
            (["scheduler"], "to run the scheduler")):
        # refused before any host is reached: not "cannot connect to gpu-x"; nor, with her
        # own config of no [[hosts]], "unknown host gpu-x" (exit 2), as if a typo
        for hers in (with_hosts, config):
            refused(fractui(hers, verb, name), "%s; %s you must be an admin" % (
                who(name), words))
    done = fractui(config, ["requeue", str(running.id)], name)
    assert (done.returncode, done.stdout) == (
        0, "%d stopping (the scheduler stops it, then puts it back in its queue)\n"
        % running.id), done
    assert done.stderr == NO_SCHEDULER  # (none runs here: none stops it yet)
    done = fractui(config, ["cancel", "3"], name)
    assert (done.returncode, done.stdout, done.stderr) == (0, "3 cancelled\n", ""), done

    listed = fractui(config, ["jobs", "--all", "--json"], name)
    assert listed.returncode == 0, listed.stderr
    assert [(j["id"], j["state"]) for j in json.loads(listed.stdout)["jobs"]] == [
        (theirs.id, "pending"), (running.id, "stopping"), (3, "cancelled")]
    audit = fractui(config, ["audit", "--json"], name)
    assert audit.returncode == 0, audit.stderr
    entries = [(e["actor"], e["action"], e["job"], e["why"])
               for e in json.loads(audit.stdout)["audit"]]
    actor = "%s@%s" % (name, HOST)  # the store's word on who, never $USER (root here)
    assert [e for e in entries if e[0] != "root@test"] == [  # after the admin's staging
        (actor, "submit", 3, "submitted to queue v"),
        (actor, "requeue", running.id, "requeued by %s" % actor),
        (actor, "cancel", 3, "cancelled by %s" % actor)], entries
    shown = fractui(config, ["audit", "3"], name).stdout.splitlines()
    assert shown[0].split() == ["TIME", "ACTOR", "ACTION", "JOB", "WHY"]
    # (TIME is three words: the date, the time and its offset from UTC)
    assert [line.split()[3:5] for line in shown[1:]] == [[actor, "submit"], [actor, "cancel"]]

    # root owns the store: the admin, who may cancel any team's job
    done = fractui(config, ["cancel", str(theirs.id)])
    assert (done.returncode, done.stdout) == (0, "%d cancelled\n" % theirs.id), done
    assert SqliteStore(str(store)).audit_log(theirs.id)[-1].actor == "root@%s" % HOST


def test_with_no_members_anywhere_only_the_stores_owner_acts(plain_dir, plain_user):
    name, _home = plain_user
    store = shared_store(plain_dir, name)
    config = write_config(plain_dir, store, {})
    refused(fractui(config, ["submit", "--queue", "v", "--", "x"], name),
            "refused: you are %s (in no team, not an admin; no [[teams]] of the config lists "
            "members, so only an admin acts); to submit to queue v of team vision you must be "
            "in team vision, or an admin" % name)
    assert SqliteStore(str(store)).jobs() == []
    # the same user owning the store is its admin: as today, the owner does everything
    shutil.chown(store, name)
    done = fractui(config, ["submit", "--queue", "n", "--", "x"], name)
    assert done.returncode == 0, done.stderr
    done = fractui(config, ["preempt", "1"], name)
    assert (done.returncode, done.stderr) == (1, "fractui: job 1 is pending: nothing to "
                                                 "preempt\n")  # allowed; nothing to stop


def tui_stop(config: Path, user: str, job: int) -> list:
    """The TUI as ``user`` (tests/tui_probe.py): job ``job``'s screen, stop, yes: what the
    screen said, as [severity, message] pairs."""
    probe = Probe(user, str(config))
    try:
        return probe.ask("stop %d cancel" % job)["said"]
    finally:
        probe.close()


def test_the_tui_shows_a_refusal_as_it_shows_any_refused_action(plain_dir, plain_user):
    name, _home = plain_user
    store = shared_store(plain_dir, name)
    config = write_config(plain_dir, store, {"vision": [name], "nlp": ["someone-else"]})
    admin = SqliteStore(str(store))
    theirs = admin.submit("n", "nlp", "theirs", ["x"], {"gpu": 0.5}, "root@test")
    ours = admin.submit("v", "vision", "ours", ["x"], {"gpu": 0.5}, "root@test")
    for job in (theirs, ours):
        running_by_hand(admin, job.id)
    admin.close()

    assert tui_stop(config, name, theirs.id) == [[
        "warning", "%s; to cancel job %d of team nlp you must be in team nlp, or an admin" % (
            who(name), theirs.id)]]
    assert tui_stop(config, name, ours.id) == [[  # (no scheduler runs for this store)
        "warning", "cancel of #%d recorded; %s" % (ours.id, words.NO_SCHEDULER)]]
    store_now = SqliteStore(str(store))
    assert [store_now.get(j.id).state for j in (theirs, ours)] == ["running", "stopping"]
    assert store_now.audit_log(ours.id)[-1].actor == "%s@%s (tui)" % (name, HOST)


def test_a_failed_jobs_last_line_is_shown_only_to_who_may_read_its_output(plain_dir,
                                                                         plain_user):
    """A failed job's last line, kept with its output (not in its reason, which every reader
    of the jobs reads): a member of its team reads "exited 3: <line>" in ``jobs``, its
    ``--json`` (``last_line``), the TUI's jobs view and job screen; a member of another team
    reads "exited 3" alone there, and no ``last_line``, as she reads none of its output."""
    name, _home = plain_user
    store = shared_store(plain_dir, name)
    config = write_config(plain_dir, store, {"vision": [name], "nlp": ["someone-else"]})
    admin = SqliteStore(str(store))
    try:
        ended = {}
        for team, queue in (("vision", "v"), ("nlp", "n")):
            job = admin.submit(queue, team, "train", ["x"], {"gpu": 0.5}, "root@test")
            running_by_hand(admin, job.id)
            ended[team] = admin.ended(job.id, ["running"], "failed", "exited 3", "root@test",
                                      "exited 3", "end", exit_code=3,
                                      last_line="ValueError: bad token %s" % team).id
        admin.keep_log(ended["vision"], "its output\n", True)  # (kept after: the line stays)
    finally:
        admin.close()
    ours, theirs = ended["vision"], ended["nlp"]
    done = fractui(config, ["jobs", "--all"], name)
    assert done.returncode == 0, done
    rows = {r.split()[0]: r for r in done.stdout.splitlines()[1:]}
    assert rows[str(ours)].endswith(" exited 3: ValueError: bad token vision"), rows
    assert rows[str(theirs)].endswith(" exited 3"), rows
    done = fractui(config, ["jobs", "--all", "--json"], name)
    assert [(j["id"], j["reason"], j.get("last_line")) for j in json.loads(done.stdout)["jobs"]
            ] == [(ours, "exited 3", "ValueError: bad token vision"), (theirs, "exited 3", None)]
    probe = Probe(name, str(config))
    try:
        assert probe.ask("reason %d" % ours) == {
            "row": "exited 3: ValueError: bad token vision",
            "screen": "exited 3: ValueError: bad token vision"}
        assert probe.ask("reason %d" % theirs) == {"row": "exited 3", "screen": "exited 3"}
    finally:
        probe.close()
    # root, the store's owner, is its admin: every job's output is its to read
    done = fractui(config, ["jobs", "--all", "--json"])
    assert [j.get("last_line") for j in json.loads(done.stdout)["jobs"]] == [
        "ValueError: bad token vision", "ValueError: bad token nlp"], done


L4 = {"index": 0, "name": "NVIDIA L4", "memory_mib": 23034, "mig_mode": False,
      "mig_pending": False}


def test_a_researchers_config_of_store_teams_and_queues_submits_by_the_kept_inventory(
        plain_dir, plain_user):
    """No host list, no SSH: the fleet is what the lease holder keeps in the store."""
    name, _home = plain_user
    store = shared_store(plain_dir, name)
    config = write_config(plain_dir, store, {"vision": [name]})
    config.write_text(config.read_text() + '[[queues]]\nname = "two"\ngpus = 2\n'
                                           'team = "vision"\n')
    admin = SqliteStore(str(store))
    admin.record_inventory("gpu-a", {"cpus": 8, "memory_mib": 65536, "mig_changes": True,
                                     "gpus": [L4]})
    admin.close()
    done = fractui(config, ["submit", "--queue", "v", "--", "x"], name)
    assert (done.returncode, done.stdout, done.stderr) == (
        0, "1 pending in queue v for team vision\n", NO_SCHEDULER)
    done = fractui(config, ["submit", "--queue", "two", "--", "x"], name)
    at = config.read_text().split("\n").index('name = "two"') + 2  # its gpus = 2
    assert (done.returncode, done.stdout) == (2, ""), done
    assert done.stderr == (
        "fractui: %s:%d: no host in the fleet could ever hold what queue two asks for (2 GPUs, "
        "isolation any): a job's GPUs are all on one host and of one model, and the most of one "
        "model a host has is 1; the "
        "fleet has 1x L4; at most 8 CPUs and 64 GiB RAM on a host\n"
        % (config, at))
    assert [j.queue for j in SqliteStore(str(store)).jobs()] == ["v"]


@pytest.fixture
def counted_port():
    """A port on 127.0.0.1 that takes every connection and closes it: (port, how many so
    far), for a test that must see whether a verb reached a host at all."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    taken: list = []

    def take() -> None:
        while True:
            try:
                conn = listener.accept()[0]
            except OSError:  # (closed: the test is over)
                return
            taken.append(conn)
            conn.close()

    threading.Thread(target=take, daemon=True).start()
    yield listener.getsockname()[1], lambda: len(taken)
    listener.close()


def test_only_the_lease_holders_work_hears_the_hosts_a_members_verb_judges_by_what_is_kept(
        plain_dir, plain_user, counted_port, monkeypatch):
    """Where what the store keeps of the hosts would refuse a queue, a verb that reaches the
    hosts anyway heard them again and renewed the store's facts of them: the lease holder's
    work. A member's `scheduler` did it before it was refused (and was told of her queue,
    exit 2, not that the verb is the admin's), her `logs` did it for her too, each an SSH
    connection to every host of her config. Now the rule is asked first, and only an admin
    hears: the member's verbs reach no host, root's `logs` does."""
    name, home = plain_user
    monkeypatch.setenv("HOME", home)  # (her own ~/.ssh, as her login has it)
    port, reached = counted_port
    store = shared_store(plain_dir, name)
    config = write_config(plain_dir, store, {"vision": [name]})
    config.write_text(config.read_text() + (
        '[[queues]]\nname = "two"\ngpus = 2\nteam = "vision"\n'  # 2 GPUs: gpu-a keeps 1
        '[ssh]\nconnect_timeout = 1\n'
        '[[hosts]]\nname = "gpu-a"\nhost = "127.0.0.1"\nport = %d\n' % port))
    admin = SqliteStore(str(store))
    admin.record_inventory("gpu-a", {"cpus": 8, "memory_mib": 65536, "mig_changes": True,
                                     "gpus": [L4]})
    job = admin.submit("v", "vision", "ours", ["x"], {"gpu": 0.5}, "root@test")
    admin.close()
    refused(fractui(config, ["scheduler"], name),
            "%s; to run the scheduler you must be an admin" % who(name))
    done = fractui(config, ["logs", str(job.id)], name)
    assert (done.returncode, done.stdout) == (2, ""), done
    assert done.stderr.endswith("the fleet has 1x L4 (from what they last reported, kept in "
                                "the store)\n"), done.stderr
    assert reached() == 0
    done = fractui(config, ["logs", str(job.id)])  # root's: the admin hears them
    assert done.returncode == 2, done
    assert reached() == 1


def test_a_member_looks_up_jobs_by_number_whatever_their_state(plain_dir, plain_user):
    """``fractui jobs 12``, as ``squeue -j 12`` or ``scontrol show job 12``: the job whatever
    its state (an ended one too, with how it ended) and whoever submitted it; a number the
    store lacks is said after the jobs found, exit 1; a word neither a host nor a number is
    exit 2, as is a number beside what only a listing takes."""
    name, _home = plain_user
    store = shared_store(plain_dir, name)
    config = write_config(plain_dir, store, {"vision": [name]})
    admin = SqliteStore(str(store))
    try:
        ended = admin.submit("v", "vision", "train", ["x"], {"gpu": 0.5}, "root@test")
        running_by_hand(admin, ended.id)
        admin.ended(ended.id, ["running"], "failed", None, "root@test", "test", "end",
                    exit_code=3)
        theirs = admin.submit("n", "nlp", "theirs", ["x"], {"gpu": 0.5}, "root@test")
    finally:
        admin.close()
    done = fractui(config, ["jobs", str(ended.id)], name)
    assert (done.returncode, done.stderr) == (0, ""), done
    head, row = done.stdout.splitlines()
    assert row.split()[:3] == [str(ended.id), "failed", "v"] and row.endswith("exited 3"), row
    done = fractui(config, ["jobs", "--json", str(theirs.id), "99", str(ended.id)], name)
    assert done.returncode == 1, done
    assert [(j["ref"], j["state"], j["exit_code"]) for j in json.loads(done.stdout)["jobs"]] == [
        (str(theirs.id), "pending", None), (str(ended.id), "failed", 3)]
    assert done.stderr == NO_SCHEDULER + "fractui: no job 99 in the store\n"
    done = fractui(config, ["jobs", "12x"], name)
    assert (done.returncode, done.stdout) == (2, ""), done
    assert done.stderr == ("fractui: %s: unknown host '12x': the config has no [[hosts]], and "
                           "not a job's number either (fractui jobs 12 shows job 12)\n" % config)
    for words in (["--all"], ["--me"], ["--user", name]):
        done = fractui(config, ["jobs", str(ended.id), *words], name)
        assert (done.returncode, done.stdout) == (2, ""), done
        assert "takes no HOST, --all, --user or --me" in done.stderr, done.stderr


def test_requeue_of_an_ended_job_says_the_submit_that_runs_it_again(plain_dir, plain_user):
    """An ended job stays ended (its record and usage are final): ``requeue`` of one is
    refused, and says the ``fractui submit`` that queues it anew as it was submitted — every
    word quoted to be pasted as it is, and pasted, it makes the same job."""
    import shlex

    name, _home = plain_user
    store = shared_store(plain_dir, name)
    config = write_config(plain_dir, store, {"vision": [name]})
    argv = ["/bin/sh", "-c", "echo \"$A\"; exit 3"]
    admin = SqliteStore(str(store))
    try:
        ended = admin.submit("v", "vision", "my run", argv, {"gpu": 0.5}, "root@test",
                             cwd="/tmp", env={"A": "it's a $HOME; x"})
        running_by_hand(admin, ended.id)
        admin.ended(ended.id, ["running"], "failed", None, "root@test", "test", "end",
                    exit_code=3)
    finally:
        admin.close()
    done = fractui(config, ["requeue", str(ended.id)], name)
    assert (done.returncode, done.stdout) == (1, ""), done
    said, line = done.stderr.rstrip("\n").split(" anew: ")
    assert said == ("fractui: job %d is failed: nothing to requeue: an ended job stays ended; "
                    "to run it again, submit it" % ended.id), done.stderr
    words = shlex.split(line)
    assert words[:3] == ["fractui", "--config", str(config)], words
    again = fractui(config, words[3:], name)
    assert again.returncode == 0, again
    new = SqliteStore(str(store)).get(int(again.stdout.split()[0]))
    assert (new.queue, new.team, new.name, new.argv, new.cwd, new.env, new.image) == (
        "v", "vision", "my run", tuple(argv), "/tmp", {"A": "it's a $HOME; x"}, None)


def test_a_job_of_a_store_its_group_writes_never_runs_as_the_agents_user(plain_dir, plain_user,
                                                                          local_fleet):
    """SQLite cannot tell who wrote a row: a member who shares the store through its group
    writes a job by hand (run_as taken away) and it is failed with the reason, never launched
    as the agent (root here); a job that keeps its member's run_as runs as the member."""
    member, _home = plain_user
    info = pwd.getpwnam(member)
    store_path = shared_store(plain_dir, member)
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="10g", memory_gib=10)],
                    store_url="sqlite://" + str(store_path))
    request = f.config.queue("10g").request()
    honest = f.store.submit("10g", None, "honest", ["/usr/bin/sleep", "600"], request,
                            "%s@h" % member, run_as=member)
    forged = f.store.submit("10g", None, "forged", ["/usr/bin/sleep", "600"], request,
                            "%s@h" % member, run_as=member)
    subprocess.run(["/usr/bin/python3", "-c", "import sqlite3, sys\n"
                    "db = sqlite3.connect(sys.argv[1])\n"
                    "db.execute('UPDATE jobs SET run_as = NULL WHERE id = ?', (sys.argv[2],))\n"
                    "db.commit()", str(store_path), str(forged.id)],
                   check=True, user=info.pw_uid, group=info.pw_gid, extra_groups=[])
    f.until(lambda: f.states() == {honest.id: "running", forged.id: "failed"})
    assert f.store.get(forged.id).reason == (
        "not launched: it would run as the agent's user, and this store's rows vouch for no "
        "admin: its file %s is writable by its group (mode 0660), so anyone who can write it "
        "could have written this job; on such a store every job runs as its submitter "
        "(run_as), and an admin runs one as the agent's user with fractui launch" % store_path)
    assert [(j["name"], j["run_as"]) for j in f.agent_jobs()] == [("honest", member)]


def test_an_admins_job_runs_as_the_agents_user_only_where_no_one_else_writes_the_store(
        plain_dir, plain_user):
    """root, the admin of both stores, submits to each: on its own (0600 in a 0700 directory)
    the job runs as the agent's user (run_as none); on one its group writes, as root (whom the
    agent refuses: such a store's admin runs a job as the agent with fractui launch)."""
    member, _home = plain_user
    shared = shared_store(plain_dir, member)
    private = plain_dir / "private"
    private.mkdir(mode=0o700)
    SqliteStore(str(private / "store.db")).close()
    for path, run_as in ((private / "store.db", None), (shared, "root")):
        folder = plain_dir / ("config-%s" % run_as)
        folder.mkdir()
        config = write_config(folder, path, {"vision": [member]})
        done = fractui(config, ["submit", "--queue", "v", "--json", "--", "/usr/bin/true"])
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["run_as"] == run_as


def test_a_store_shared_through_an_acl_vouches_for_no_admin_and_names_who_it_lets_in(
        plain_dir, plain_user):
    """A store root made its own (0600 in a 0700 directory) that an ACL lets the member write:
    its mode's group bits show the ACL's mask, so it is a store others write; the words name
    the member, not a group no one is in. root's job then runs as root (refused by the agent:
    its admin runs one as the agent's user with fractui launch)."""
    member, _home = plain_user
    info = pwd.getpwnam(member)
    folder = plain_dir / "state"
    folder.mkdir(mode=0o700)
    path = folder / "store.db"
    SqliteStore(str(path)).close()
    acl.grant(folder, uid=info.pw_uid)
    acl.grant(path, uid=info.pw_uid, perm=6)
    subprocess.run(["/usr/bin/python3", "-c", "import sys; open(sys.argv[1], 'r+b').close()",
                    str(path)], check=True, user=info.pw_uid, group=info.pw_gid,
                   extra_groups=[])  # the ACL lets the member write it: no group does
    assert SqliteStore(str(path)).hand_writers() == (
        "its file %s is writable by the user %s (uid %d) through its ACL (mode 0660)" % (
            path, member, info.pw_uid))
    config = write_config(plain_dir, path, {"vision": [member]})
    done = fractui(config, ["submit", "--queue", "v", "--json", "--", "/usr/bin/true"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run_as"] == "root"


def test_a_job_the_lease_holder_would_never_launch_again_is_not_moved_by_the_cli(
        plain_dir, plain_user):
    """root, the admin, moves a job of no run_as (launched as the agent's user before the store
    was shared with a group): its next attempt would be failed, never launched, so the move is
    refused with why before its host is asked (gpu-x: nothing listens), and it runs on."""
    member, _home = plain_user
    path = shared_store(plain_dir, member)
    store = SqliteStore(str(path))
    try:
        job = store.submit("v", "vision", "old", ["x"], {}, "root@h")
        store.place(job.id, Slot("gpu-x", (0,), None, None, 512, 0.25), "sched", "decided")
        job = store.started(job.id, "j1", None, "sched", "launched")
    finally:
        store.close()
    config = write_config(plain_dir, path, {"vision": [member]}, hosts=True)
    refused(fractui(config, ["move", str(job.id), "gpu-x", "1"]),
            "job %d is not moved: stopped, its next attempt would be failed, not launched: it "
            "would run as the agent's user, and this store's rows vouch for no admin: its file "
            "%s is writable by its group (mode 0660), so anyone who can write it could have "
            "written this job; on such a store every job runs as its submitter (run_as), and "
            "an admin runs one as the agent's user with fractui launch; it runs on where it is"
            % (job.id, path))
    assert SqliteStore(str(path)).get(job.id).state == "running"


def test_a_queued_jobs_output_typed_as_host_job_is_its_teams_to_read(pg_server, local_fleet,
                                                                      monkeypatch):
    """`fractui logs 1` of another team's job was refused, but `fractui logs gpu-a/j1`, the
    same attempt named by its host and its agent's id, printed its output to any role that
    reaches the host: the rule was asked of neither. It is READ of the job's team, as by its
    number; a HOST/JOB no job of the store holds (launched by hand) is of no team, the
    admin's. On PostgreSQL, whose role says who asks: ann (team vision) reaches gpu-a as
    root does here. Each line of such output the hosts' agents list (a failed job's last line:
    `jobs HOST`, `status --json`) is the admins' alone. And a role the store refuses (eve, in
    no team and granted nothing) was read the output by the id alone, as if no store were
    there to ask: a refusal is no outage, and she is refused it too."""
    guarded = _guarded(pg_server, LEAST)
    eve = "eve_" + guarded.tag
    pg_server.sql("CREATE ROLE %s LOGIN" % eve)
    f = local_fleet({"gpu-a": "1xL4"}, [QueueConfig(name="n", memory_gib=1, team=guarded.nlp)],
                    teams=[TeamConfig(name=guarded.vision),
                           TeamConfig(name=guarded.nlp, quota_gpus=1)],
                    store_url=guarded.url("postgres"))
    lost = f.store.submit("n", guarded.nlp, "lost", [
        "/bin/sh", "-c", "echo lost-$((6*7)); exit 3"], f.config.queue("n").request(), "root@test")
    f.until(lambda: f.states()[lost.id] == "failed")
    theirs = f.store.submit("n", guarded.nlp, "theirs", [
        "/bin/sh", "-c", "echo nlp-secret; exec sleep 600"], f.config.queue("n").request(),
        "root@test", env={"NLP_TOKEN": "nlp-token"})
    ours = f.store.submit("n", guarded.vision, "ours", ["/bin/echo", "vision-argv"],
                          f.config.queue("n").request(), "root@test",
                          env={"VISION_TOKEN": "vision-token"})
    f.until(lambda: "nlp-secret" in (f.said(theirs) if f.states()[theirs.id] == "running"
                                     else []))
    ref = "gpu-a/%s" % f.store.get(theirs.id).agent_job
    by_hand = f.fleet.session("gpu-a").call("job.launch", {
        "key": "k-hand", "gpu": 0, "memory_mib": 10,
        "argv": ["/bin/sh", "-c", "echo hand-secret; exit 3"]})
    session = f.fleet.session("gpu-a")
    wait_until(lambda: session.call("job.get", {"job": by_hand["id"]})["state"] == "exited",
               "the job's end")
    f.config = dataclasses.replace(f.config, store=StoreSettings(guarded.url(guarded.ann)))
    whom = who(guarded.ann, "team %s" % guarded.vision)
    nlp = "of team %s you must be in team %s, or an admin" % (guarded.nlp, guarded.nlp)
    typed = "%s (job %d) %s" % (ref, theirs.id, nlp)
    for verb, what in ((["logs", str(theirs.id)], "job %d %s" % (theirs.id, nlp)),
                       (["logs", ref], typed), (["logs", "-f", ref], typed),
                       (["logs", "gpu-a/%s" % by_hand["id"]], "gpu-a/%s of no team you must "
                        "be an admin" % by_hand["id"])):
        refused(f.fractui(*verb), "%s; to read the output of %s" % (whom, what))
    f.config = dataclasses.replace(f.config, store=StoreSettings(guarded.url(eve)))
    for typed in (ref, "gpu-a/%s" % by_hand["id"]):
        done = f.fractui("logs", typed)
        assert (done.returncode, done.stdout) == (1, ""), done
        assert done.stderr.startswith("fractui: store ") and eve in done.stderr, done
    # nor is a line of it shown where the hosts' jobs are listed (the last line of one that
    # failed), in the table or in --json
    monkeypatch.setenv("COLUMNS", "200")  # (the table's lines whole)
    for role, line in ((guarded.ann, None), (eve, None), (guarded.ops, "hand-secret")):
        f.config = dataclasses.replace(f.config, store=StoreSettings(guarded.url(role)))
        # (eve's: the store's error said, exit 1, and the hosts' jobs listed all the same)
        listed = f.fractui("jobs", "gpu-a", "--all", "--json")
        assert listed.returncode == (role == eve), listed
        hand = next(j for j in json.loads(listed.stdout)["jobs"] if j.get("ref") == (
            "gpu-a/%s" % by_hand["id"]))
        assert hand.get("last_line") == line, hand
        assert ("lost-42" in listed.stdout) == (line is not None), listed  # (its team's)
        shown = f.fractui("jobs", "gpu-a").stdout
        assert ("exited 3: hand-secret" in shown, "exited 3" in shown) == (
            line is not None, True), shown
        done = f.fractui("status", "--json")  # (ops: an admin, who reads them all)
        assert done.returncode == 0, done
        assert {j.get("last_line") for h in json.loads(done.stdout)["hosts"]
                for j in h["jobs"]} - {None} == ({"hand-secret", "lost-42"} if line else
                                                 set()), done.stdout
        # nor a job's command or variables (a token, a password), an agent's record or the
        # store's: another team's job's are its team's and the admins', one by hand theirs (an
        # agent's record carries no env: nlp-token is the store's alone)
        secrets = ("hand-secret", "nlp-secret", "nlp-token", "lost-$((6*7))")
        said = {"jobs HOST": (listed.stdout, set(secrets)),
                "status": (done.stdout, set(secrets) - {"nlp-token"})}
        if role != eve:  # (whom the store refuses reads no job of it by number, no audit)
            numbered = f.fractui("jobs", str(theirs.id), str(ours.id), "--json").stdout
            said["jobs JOB"] = (numbered, {"nlp-secret", "nlp-token"})
            said["audit"] = (f.fractui("audit", "--json").stdout, set(secrets) - {"hand-secret"})
            mine = json.loads(numbered)["jobs"][1]  # (her team's: hers to read)
            assert (mine["argv"], mine["env"]) == (
                ["/bin/echo", "vision-argv"], {"VISION_TOKEN": "vision-token"}), mine
        for verb, (out, shown_ops) in said.items():
            assert {s for s in secrets if s in out} == (shown_ops if line else set()), (
                role, verb, out)
    done = f.fractui("logs", ref)  # (ops's)
    assert (done.returncode, done.stdout) == (0, "nlp-secret\n"), done


def test_a_filter_by_a_name_nobody_goes_by_says_so_with_the_close_one(store_url, tmp_path):
    """``jobs --user`` and ``report --user`` of a name no one in the store goes by answered
    an empty list, which reads as "no jobs": a typo is said, exit 2, with the close name and
    the known ones (who submitted a job the store keeps, the config's members, the caller);
    a known user with no jobs there is still a plain empty answer. Both stores: who submitted
    is the store's to say. ``--team`` of a team neither the store nor the config has is the
    config's error, with its close name, as before."""
    store = open_store(store_url)
    try:
        store.submit("v", "vision", "a", ["x"], {"gpu": 0.5}, "alice@h")
        gone = store.submit("v", "vision", "b", ["x"], {"gpu": 0.5}, "bob@h")
        store.ended(gone.id, ("pending",), "cancelled", "by bob", "bob@h", "by bob", "cancel")
        caller = store.identity().user
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[teams]]\nname = "vision"\nmembers = ["carol"]\n'
                      '[[queues]]\nname = "v"\ngpu = 0.5\nteam = "vision"\n' % store_url)
    known = ", ".join(sorted({"alice", "bob", "carol", caller}))
    listed = ("no [[teams]] lists them" if store_url.startswith("sqlite") else  # (its roles)
              "no role of the store's teams or admins is theirs")
    for verb in (["jobs", "--user", "alcie"], ["jobs", "--all", "--user", "alcie"],
                 ["report", "--user", "alcie"], ["report", "--user", "alcie", "--team",
                                                 "vision"]):
        done = fractui(config, verb)
        assert (done.returncode, done.stdout, done.stderr) == (
            2, "", "fractui: --user 'alcie': no user of that name is known in this store (none "
            "submitted a job it keeps, and %s) (did you mean 'alice'? known: %s)\n" % (
                listed, known)), (verb, done)
    for user, says in (("bob", "no active jobs (--all lists ended ones too)\n"),
                       ("carol", "no active jobs (--all lists ended ones too)\n")):
        done = fractui(config, ["jobs", "--user", user])
        assert (done.returncode, done.stdout) == (0, says), done
    done = fractui(config, ["report", "--user", "carol"])
    assert done.returncode == 0 and "none of carol's jobs held a GPU" in done.stdout, done
    done = fractui(config, ["report", "--team", "visoin"])
    assert done.returncode == 2 and "did you mean 'vision'?" in done.stderr, done


def test_a_filter_by_a_teammate_who_never_submitted_on_postgresql_is_no_typo(pg_server,
                                                                             tmp_path):
    """On PostgreSQL who is in a team is the store's word, its roles, not the config's
    ``members`` (a researcher's config lists none): ``jobs --user`` and ``report --user`` of
    bea, in team vision's role, who has submitted nothing yet, answered that no user of that
    name is known in this store, exit 2, a false typo. She is known, and her empty list is the
    plain empty answer; a name no role goes by is still a typo, with the close one."""
    guarded = _guarded(pg_server, LEAST)
    bea = "bea_" + guarded.tag
    pg_server.sql("CREATE ROLE %s LOGIN IN ROLE fractui_team_%s" % (bea, guarded.vision))
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "%s"\n[[teams]]\nname = "%s"\n[[queues]]\nname = "v"\n'
                      'gpu = 0.5\n' % (guarded.url(guarded.ann), guarded.vision))
    done = fractui(config, ["jobs", "--user", bea])
    assert (done.returncode, done.stdout) == (
        0, "no active jobs (--all lists ended ones too)\n"), done
    done = fractui(config, ["report", "--user", bea])
    assert done.returncode == 0 and "none of %s's jobs held a GPU" % bea in done.stdout, done
    done = fractui(config, ["jobs", "--user", "bae_" + guarded.tag])
    assert done.returncode == 2 and "did you mean '%s'?" % bea in done.stderr, done
