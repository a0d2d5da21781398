"""A host lost past the timeout: its jobs run again elsewhere, and when it comes back the copies
it kept running are killed by their keys before it takes any new work. Real sshd on loopback,
each host behind a proxy the test cuts."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import replace
from typing import List

from fractui.config import QueueConfig, SchedulerSettings, StoreSettings
from fractui.fleet.fleet import Fleet
from fractui.scheduler import Scheduler
from fractui.store import SqliteStore, sqlite_url
from tests import sshd
from tests.test_fleet import SshFleet

ssh_env = sshd.ssh_env


def test_a_lost_host_has_its_jobs_requeued_and_its_old_copies_stopped_on_return(
        ssh_env, tmp_path):
    env = SshFleet(ssh_env, tmp_path)
    try:
        env.add("gpu-a", "2xL4")
        env.add("gpu-b", "2xL4")
        whole = QueueConfig(name="whole", gpus=1)
        pinned = {h: QueueConfig(name="on-" + h, gpu=0.25, hosts=(h,)) for h in ("gpu-a",
                                                                               "gpu-b")}
        config = replace(env.config(), queues=(whole, *pinned.values()),
                         scheduler=SchedulerSettings(host_lost_s=2.0, interval_s=0.2),
                         store=StoreSettings(sqlite_url(str(tmp_path / "store.db"))))
        store = SqliteStore(str(tmp_path / "store.db"))
        with Fleet(config, reconnect_max_s=0.5) as fleet:
            fleet.wait_settled(60)
            sched = Scheduler(config, store, fleet, name="test")
            job = store.submit("whole", None, "train", [sys.executable, "-c",
                                                        "import time; time.sleep(600)"],
                               whole.request(), "test")

            def until(check, timeout_s: float = 60.0) -> None:
                deadline = time.time() + timeout_s
                while not check():
                    assert time.time() < deadline, (store.get(job.id), fleet.statuses())
                    sched.step()
                    time.sleep(0.1)

            until(lambda: store.get(job.id).state == "running")
            first = store.get(job.id)
            lost, other = first.slot.host, ({"gpu-a", "gpu-b"} - {first.slot.host}).pop()
            old_key = first.key(store.uid)

            env.proxies[lost].cut()
            until(lambda: store.get(job.id).attempt == 1 and store.get(job.id).state ==
                  "running")
            second = store.get(job.id)
            assert second.slot.host == other
            assert [s.key for s in store.stale()] == [old_key]
            # work for the lost host, waiting: it must not start there before the old copy ends
            later = store.submit(pinned[lost].name, None, "later", ["sleep", "600"],
                                 pinned[lost].request(), "test")

            # The first moment the host counts as back, ask it what runs there.
            session = fleet.session(lost)
            first_look: List[dict] = []

            def look() -> None:
                while session.status.state != "online":
                    time.sleep(0.005)
                first_look.extend(session.call("job.list")["jobs"])

            watcher = threading.Thread(target=look, daemon=True)
            watcher.start()
            env.proxies[lost].restore()
            until(lambda: not store.stale() and store.get(later.id).state == "running")
            watcher.join(30)
            old_copy = next(j for j in first_look if j["key"] == old_key)
            assert old_copy["state"] == "killed"  # already gone when the host came back
            ended = next(j for j in fleet.session(lost).call("job.list")["jobs"]
                         if j["key"] == old_key)
            assert ended["state"] == "killed"
            assert ended["reason"] == "a stale copy: job %d was requeued while %s was lost" % (
                job.id, lost)
            assert store.get(job.id).state == "running"
            assert store.get(job.id).slot.host == other  # the one copy that counts
            # the returning host took no new work while its stale copy ran
            assert [e.action for e in store.audit_log(job.id)].count("decide") == 2
            stops = [e for e in store.audit_log(job.id) if e.action == "stop-stale"]
            assert len(stops) == 1
            # the host had a free GPU all along, yet took the waiting job only once the stale
            # copy was gone (the host's connect stopped it before the host counted as back)
            placed_later = [e for e in store.audit_log(later.id) if e.action == "decide"]
            assert len(placed_later) == 1 and placed_later[0].id > stops[0].id
            sched.stop()
        store.close()
    finally:
        env.stop()
