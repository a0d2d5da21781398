"""Nothing that names this process's user reads $USER or $LOGNAME, which the caller sets: the
lease holder's name (the scheduler's audit entries), the SSH login of a host with no user, the
store's identity and the words a store refusal uses."""

from __future__ import annotations

import os
import pwd

from fractui.fleet.sshconfig import resolve
from fractui.scheduler.service import default_holder
from fractui.store import SqliteStore
from fractui.store.sqlite_file import user
from fractui.whoami import os_user
from tests.test_fleet_sshconfig import host


def test_the_user_is_the_effective_uids_whatever_user_says(tmp_path, monkeypatch):
    real = pwd.getpwuid(os.geteuid()).pw_name
    monkeypatch.setenv("USER", "mallory")
    monkeypatch.setenv("LOGNAME", "mallory")
    assert os_user() == real
    assert default_holder().startswith(real + "@")
    empty = tmp_path / "ssh_config"
    empty.write_text("")
    assert resolve(host("gpu-a"), str(empty)).target.user == real
    assert user() == real
    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        assert store.identity().user == real
    finally:
        store.close()
