"""A researcher's day on a shared PostgreSQL store, walked as docs/cli.md ("A shared PostgreSQL
store", "Who may run what") tells it, with real parts throughout: a server of this module's own
that lets each OS user in by peer over its unix socket as the role of its name, the docs'
GRANTs and team roles, OS users running ``fractui`` as themselves with a config of the store,
the teams and the queues, the admin's ``fractui scheduler`` on simulated local hosts (one of
them never reached). What each of them is told is checked word for word: true, and saying
what to do."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from typing import Dict

from fractui.words import NO_SCHEDULER
from tests.conftest import REPO
from tests.localfleet import wait
from tests.test_access_cli import refused, who
from tests.test_store_damage import fractui, plain_dir  # noqa: F401 - plain_dir: a fixture
from tests.test_teams_postgres import (HOST, SLEEPER, _user_says_root,  # noqa: F401 - fixtures
                                       peer_server, team)

SH = ["/bin/sh", "-c"]
# The admin's scheduler also lists gpu-c, a host it never reaches (its state dir cannot be
# made), and a queue that may use gpu-c alone.
FAR = ('[[hosts]]\nname = "gpu-c"\ntransport = "local"\nsim = "1xL4"\n'
       'state_dir = "/dev/null/gpu-c"\n')
FAR_QUEUE = '[[queues]]\nname = "c"\ngpu = 0.25\nteam = "vision"\nhosts = ["gpu-c"]\n'
OPEN_QUEUE = '[[queues]]\nname = "open"\ngpu = 0.25\n'  # (of no team)


def _scheduler(team) -> subprocess.Popen:
    """The admin's ``fractui scheduler`` (root: role root, in fractui_admin), once it holds
    the lease and has recorded the hosts it reaches."""
    path = team.folder / "admin.toml"
    path.write_text(open(team.fleet.write_config()).read() + FAR + FAR_QUEUE)
    run = subprocess.Popen([sys.executable, "-m", "fractui", "--config", str(path), "scheduler",
                            "--name", "head"], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    wait(lambda: team.fleet.store.lease_holder() is not None and
         {"gpu-a", "gpu-b"} <= set(team.fleet.store.inventory()), team.fleet.states, alive=run)
    return run


def _job(team, person: str, number: int) -> Dict:
    listed = team.run(person, "jobs", "--all", "--json")
    assert listed.returncode == 0, listed
    return next(j for j in json.loads(listed.stdout)["jobs"] if j["id"] == number)


def test_a_researchers_day_on_a_shared_postgresql_store(team, plain_users):
    team.config.write_text(team.config.read_text() + FAR_QUEUE + OPEN_QUEUE)
    ann, dan = team.names["ann"], team.names["dan"]
    run = _scheduler(team)
    try:
        # submit --wait: each step, how it ended, and a failed job's last lines; exit 1
        done = team.run("ann", "submit", "--queue", "v", "--wait", "--",
                        *SH, "echo hello; echo oops >&2; exit 3")
        assert (done.returncode, done.stdout) == (1, "1 pending in queue v for team vision\n"), done
        # (all of it: no "fractui logs 1 shows more", which shows nothing more)
        assert done.stderr.endswith("fractui: job 1 ended: exited 3: oops\nfractui: all of its "
                                    "output (2 lines):\n  hello\n  oops\n"), done.stderr
        # its output is its team's to read: another team's member, refused its logs, reads
        # none of it in how it ended, in jobs or the audit (its agent's last_line is kept with
        # the output); its team reads its last line beside its end
        refused(team.run("cat", "logs", "1"), "%s; to read the output of job 1 of team vision "
                "you must be in team vision, or an admin" % who(team.names["cat"], "team nlp"))
        assert (_job(team, "cat", 1)["reason"], "last_line" in _job(team, "cat", 1)) == (
            "exited 3", False)
        assert (_job(team, "ann", 1)["reason"], _job(team, "ann", 1)["last_line"]) == (
            "exited 3", "oops")
        for person, said in (("cat", "exited 3"), ("ann", "exited 3: oops")):
            listed = team.run(person, "jobs", "1")
            assert listed.returncode == 0 and listed.stdout.splitlines()[1].endswith(
                " " + said), (person, listed)
        shown = team.run("cat", "audit", "--json")
        ends = [e for e in json.loads(shown.stdout)["audit"] if e["action"] == "end"]
        assert [(e["job"], e["why"]) for e in ends] == [(1, "exited 3")], ends
        done = team.run("ann", "submit", "--queue", "v", "--wait", "--", *SH, "echo fine")
        assert (done.returncode, done.stderr.splitlines()[-1]) == (
            0, "fractui: job 2 ended: exited 0"), done

        # a queue whose only host is never reached: the job says which host it waits for
        # (the store keeps gpu-a and gpu-b, which the queue may not use, and nothing of gpu-c)
        done = team.run("ann", "submit", "--queue", "c", "--", *SLEEPER)
        assert (done.returncode, done.stdout, done.stderr) == (
            0, "3 pending in queue c for team vision\n", "fractui: note: the store keeps no "
            "inventory of gpu-c yet (a scheduler records a host once it reaches it), so whether "
            "a GPU can hold queue c is left to the scheduler: once one has looked at the job, "
            "fractui jobs says why it waits\n"), done
        far = 3
        waits = "no host it may use is reachable now (gpu-c offline): it waits for one"
        wait(lambda: _job(team, "ann", far)["reason"] == waits, lambda: _job(team, "ann", far))

        # jobs --me, logs -f through a requeue and a cancel, then the ended job's verbs
        job = team.submit("ann", "v")
        wait(lambda: _job(team, "ann", job)["state"] == "running", lambda: _job(team, "ann", job))
        mine = team.run("ann", "jobs", "--me", "--json")
        assert mine.returncode == 0 and [j["id"] for j in json.loads(mine.stdout)["jobs"]] == [
            far, job], mine
        followed: Dict[str, subprocess.CompletedProcess] = {}
        follower = threading.Thread(target=lambda: followed.setdefault(
            "f", team.run("ann", "logs", "-f", str(job))))
        follower.start()
        done = team.run("ann", "requeue", str(job))
        assert (done.returncode, done.stdout, done.stderr) == (
            0, "%d stopping (the scheduler stops it, then puts it back in its queue)\n" % job,
            ""), done
        wait(lambda: (_job(team, "ann", job)["attempt"], _job(team, "ann", job)["state"]) == (
            1, "running"), lambda: _job(team, "ann", job))
        done = team.run("ann", "cancel", str(job))
        assert (done.returncode, done.stdout) == (0, "%d stopping (the scheduler stops it)\n"
                                                  % job), done
        follower.join(60)
        # (the sleeper prints nothing: each attempt says so, and since when it runs; the next
        # attempt, where the cancel came first, that it printed nothing)
        quiet = re.escape("fractui: job %d has printed nothing yet (running on gpu-a since " % job
                          ) + r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\); following it\n"
        assert (followed["f"].returncode, followed["f"].stdout) == (0, ""), followed
        assert re.fullmatch(quiet + re.escape(
            "fractui: job %d went back to its queue (requeued by %s@%s); following its next "
            "attempt\n" % (job, ann, HOST)) + "(?:%s|%s)" % (quiet, re.escape(
                "fractui: job %d printed nothing\n" % job)) + re.escape(
                "fractui: job %d ended: cancelled by %s@%s\n" % (job, ann, HOST)),
            followed["f"].stderr), followed
        done = team.run("ann", "requeue", str(job))
        assert (done.returncode, done.stdout) == (1, ""), done
        assert done.stderr == (
            "fractui: job %d is cancelled: nothing to requeue: an ended job stays ended; to run "
            "it again, submit it anew: fractui --config %s submit --queue v -- %s\n" % (
                job, team.config, " ".join(SLEEPER))), done.stderr

        # a member of two teams charges either; report --me is theirs alone, by team
        done = team.run("dan", "submit", "--queue", "v", "--team", "nlp", "--", *SLEEPER)
        assert done.stdout.endswith(" pending in queue v for team nlp\n"), done
        theirs = int(done.stdout.split()[0])
        wait(lambda: _job(team, "dan", theirs)["state"] == "running",  # (held a GPU: reported)
             lambda: _job(team, "dan", theirs))
        report = team.run("dan", "report", "--me")
        assert (report.returncode, report.stderr) == (0, ""), report
        assert report.stdout.startswith("usage of %s's jobs from " % dan), report.stdout
        assert [line.split()[0] for line in report.stdout.splitlines()[3:5]] == [
            "nlp", "total"], report.stdout

        # a member trying another team's job is told who they are and what it needs
        for verb, words in ((["cancel"], "to cancel"), (["requeue"], "to requeue"),
                            (["logs", "-f"], "to read the output of")):
            refused(team.run("cat", *verb, str(far)),
                    "%s; %s job %d of team vision you must be in team vision, or an admin"
                    % (who(team.names["cat"], "team nlp"), words, far))
        assert _job(team, "cat", theirs)["team"] == "nlp"

        # a queue of no team: submit needs --team, and names those the store's roles put the
        # user in, to paste
        for person, mine in (("ann", "--team vision (you are in vision)"),
                             ("dan", "--team vision or --team nlp (you are in vision, nlp)")):
            done = team.run(person, "submit", "--queue", "open", "--", "true")
            assert (done.returncode, done.stdout, done.stderr) == (
                2, "", "fractui: submit needs --team: the config has teams (vision, nlp) and "
                "queue open names none; %s\n" % mine), done
    finally:
        run.terminate()
        said = run.communicate(timeout=60)[1]
    assert "Traceback" not in said, said
    done = team.run("ann", "submit", "--queue", "v", "--", *SLEEPER)
    assert done.stderr == "fractui: %s\n" % NO_SCHEDULER, done

    # a team the admin added after the GRANTs: its member is told the grants are missing, not
    # to be made a member of a team's role (eli is); a role in no team, to be made one
    eli, zed = plain_users("fxeli")[0], plain_users("fxzed")[0]
    for statement in ("CREATE ROLE fractui_team_speech", 'CREATE ROLE "%s" LOGIN' % eli,
                      'GRANT fractui_team_speech TO "%s"' % eli, 'CREATE ROLE "%s" LOGIN' % zed):
        team.server.sql(statement)
    where = "fractui: store %s: role " % team.fleet.store.where  # (it holds %2F)
    for user, says in ((eli, "is in fractui_team_speech, which was granted nothing on the "
                             "store's tables: an admin runs the GRANTs of docs/decisions.md, "
                             "\"Who the caller is on PostgreSQL\", TO \"fractui_team_speech\" "
                             "in the store's database)\n"),
                       (zed, "was granted nothing on the store's tables: an admin makes it a "
                             "member of a team's role, fractui_team_<team>, given the GRANTs "
                             "of docs/decisions.md, \"Who the caller is on PostgreSQL\")\n")):
        for verb in (["jobs", "--me"], ["submit", "--queue", "v", "--wait", "--", "true"]):
            done = fractui(team.config, verb, user)
            assert (done.returncode, done.stdout, done.stderr) == (
                1, "", where + user + " may not do this: permission denied for table "
                "fractui_schema (it " + says), done
