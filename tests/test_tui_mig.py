"""MIG by hand from the GPU detail view, on a simulated local host and a real store: ``X``
destroys an idle instance and ``M`` turns MIG mode off, each plan shown and confirmed first,
made by the agent and audited as the TUI's; a plan that is refused is said, and nothing is
asked."""

from __future__ import annotations

import os
import re
import signal
import threading

import pytest
from rich.console import Console
from textual.widgets import OptionList

from fractui.config import QueueConfig
from fractui.tui.gpu_screen import GpuScreen, ProfileScreen
from fractui.tui.help import HelpScreen
from fractui.tui.jobs import ConfirmScreen
from tests import localfleet
from tests.test_mig_by_hand import SMALL, gpu_record, said
from tests.test_tui_cordons import to_host
from tests.tui_frozen import pilot_test, said as notes, settled_app
from tests.tui_live import live_app, until

local_fleet = localfleet.local_fleet


@pilot_test
async def test_destroy_and_mode_from_the_gpu_view_are_planned_confirmed_and_audited(
        local_fleet):
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [SMALL])
    made = f.fractui("mig", "gpu-a", "0", "1g.10gb", "--yes")
    assert made.returncode == 0, said(made)
    uuid = re.search(r"(MIG-\S+)", made.stdout).group(1)
    async with live_app(f) as (app, pilot):
        await until(pilot, lambda: any(i.get("uuid") == uuid for i in (
            app.fleet.statuses["gpu-a"].snapshot or {}).get("gpus", [{}])[0].get(
                "instances", ())), "the instance on the screen")
        await to_host(app, pilot, "gpu-a")
        await pilot.press("d")
        assert isinstance(app.screen, GpuScreen)
        await pilot.press("M")  # an instance is on it: refused, nothing asked
        await until(pilot, lambda: notes(app), "the refusal said")
        assert isinstance(app.screen, GpuScreen)
        assert notes(app)[-1].startswith("gpu-a gpu 0 has MIG instances (1g.10gb at slot ")
        assert notes(app)[-1].endswith("destroy them first (fractui mig gpu-a 0 --destroy "
                                       "UUID)"), notes(app)
        mark = len(app.notices.kept)
        await pilot.press("X")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the plan asked")
        assert app.screen.question.startswith("Destroy idle 1g.10gb at slot ")
        assert uuid in app.screen.question
        await pilot.press("y")
        await until(pilot, lambda: notes(app, mark), "the outcome said")
        assert notes(app, mark)[-1].startswith("destroyed 1g.10gb at slot "), notes(app, mark)
        assert gpu_record(f, 0)["instances"] == []
        await until(pilot, lambda: not (app.fleet.statuses["gpu-a"].snapshot or {}).get(
            "gpus", [{}])[0].get("instances"), "the empty GPU on the screen")
        mark = len(app.notices.kept)
        await pilot.press("M")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the plan asked")
        await pilot.press("n")  # not confirmed: nothing changes
        await pilot.pause(0.3)
        assert gpu_record(f, 0)["mig_mode"] is True and not notes(app, mark)
        await pilot.press("M")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "asked again")
        await pilot.press("y")
        await until(pilot, lambda: notes(app, mark), "the outcome said")
        assert notes(app, mark)[-1] == "MIG mode is now off on gpu-a gpu 0", notes(app, mark)
        assert gpu_record(f, 0)["mig_mode"] is False
    entries = [e for e in f.store.audit_log(limit=100) if e.action == "mig"]
    assert [e.detail["change"] for e in entries[-2:]] == ["destroy", "mode"], entries
    assert all(e.actor.endswith(" (tui)") for e in entries[-2:]), entries


@pilot_test
async def test_m_on_a_gpu_whose_mode_waits_for_a_reset_asks_the_agent_to_reset_it(local_fleet):
    """nvidia-smi -r is refused while the agent's NVML session is attached, so the view offers
    the reset the pending mode waits for, made by the agent (only while nothing runs there)."""
    f = local_fleet({"gpu-a": "1xA100-80GB"}, [SMALL])
    f.fleet.session("gpu-a").call("sim.mode_waits_for_reset", {"gpu": 0})
    done = f.fractui("mig", "gpu-a", "0", "--mode", "on", "--yes")
    assert done.returncode == 0 and "is pending" in done.stdout, said(done)
    async with live_app(f) as (app, pilot):
        await until(pilot, lambda: (app.fleet.statuses["gpu-a"].snapshot or {}).get(
            "gpus", [{}])[0].get("mig_pending") is True, "the pending mode on the screen")
        await to_host(app, pilot, "gpu-a")
        await pilot.press("d")
        await pilot.press("M")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the plan asked")
        assert app.screen.question.startswith(
            "Turn MIG mode on on gpu-a gpu 0 (NVIDIA A100-SXM4-80GB, MIG now off, on after the "
            "next reset)"), app.screen.question
        assert app.screen.question.endswith(
            "or the agent then resets the GPU (only while nothing runs there)?")
        await pilot.press("y")
        await until(pilot, lambda: notes(app), "the outcome said")
        assert notes(app)[-1] == ("MIG mode is now on on gpu-a gpu 0, after a GPU reset "
                                  "(nothing ran there)"), notes(app)
    rec = gpu_record(f, 0)
    assert (rec["mig_mode"], rec["mig_pending"]) == (True, True)


@pilot_test
async def test_x_pressed_again_while_a_destroy_is_under_way_never_plans_the_same_instance(
        local_fleet):
    """``X``, ``y``, and ``X`` again at once (the docs: "X again for the next"): while the first
    destroy is under way the GPU as shown still has its instance, and the second ``X`` planned
    that same instance's destroy again. It is said to wait instead; once done, ``X`` offers the
    next instance, even before a new snapshot drops the one destroyed."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [SMALL])
    uuids = []
    for _ in range(2):
        made = f.fractui("mig", "gpu-a", "0", "1g.10gb", "--yes")
        assert made.returncode == 0, said(made)
        uuids.append(re.search(r"(MIG-\S+)", made.stdout).group(1))
    async with live_app(f) as (app, pilot):
        await until(pilot, lambda: len((app.fleet.statuses["gpu-a"].snapshot or {}).get(
            "gpus", [{}])[0].get("instances", ())) == 2, "both instances on the screen")
        gate = threading.Event()
        call = app.source.call

        def held(host, method, params, timeout_s=30.0):  # the agent's answer, held back
            if method == "mig.destroy":
                assert gate.wait(30)
            return call(host, method, params, timeout_s)

        app.source.call = held
        await to_host(app, pilot, "gpu-a")
        await pilot.press("d", "X")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the plan asked")
        first = next(u for u in uuids if u in app.screen.question)
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, GpuScreen), "back on the GPU")
        mark = len(app.notices.kept)
        await pilot.press("X")
        await pilot.pause(0.2)
        assert isinstance(app.screen, GpuScreen), app.screen.question
        assert notes(app, mark) == ["a MIG change of gpu-a gpu 0 is under way: wait for its "
                                    "outcome"], notes(app, mark)
        mark = len(app.notices.kept)
        gate.set()
        await until(pilot, lambda: notes(app, mark), "the outcome said")
        assert notes(app, mark)[-1].startswith("destroyed 1g.10gb at slot "), notes(app, mark)
        await pilot.press("X")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the next asked")
        other = next(u for u in uuids if u != first)
        assert other in app.screen.question and first not in app.screen.question
        await pilot.press("n")


@pilot_test
async def test_n_makes_an_instance_of_a_picked_profile_planned_confirmed_and_audited(
        local_fleet):
    """``N`` in the GPU view: the model's profiles to pick from, the agent's plan asked, the
    instance made and audited as ``fractui mig HOST GPU PROFILE`` makes it; on a GPU out of MIG
    mode it is refused with how to turn it on, and nothing is asked."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig,1xA100-80GB"}, [SMALL])
    async with live_app(f) as (app, pilot):
        await to_host(app, pilot, "gpu-a")
        await pilot.press("d", "N")
        await until(pilot, lambda: isinstance(app.screen, ProfileScreen), "the profiles")
        menu = app.screen.query_one(OptionList)
        assert [menu.get_option_at_index(i).id for i in range(menu.option_count)][:2] == [
            "7g.80gb", "4g.40gb"]  # largest first
        await pilot.press("escape")  # nothing picked: nothing asked, nothing made
        await until(pilot, lambda: isinstance(app.screen, GpuScreen), "back on the GPU")
        await pilot.press("N")
        await until(pilot, lambda: isinstance(app.screen, ProfileScreen), "the profiles")
        menu = app.screen.query_one(OptionList)
        menu.highlighted = next(i for i in range(menu.option_count)
                                if menu.get_option_at_index(i).id == "3g.40gb")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the plan asked")
        assert app.screen.question.startswith("On gpu-a gpu 0: create 3g.40gb at slot ")
        await pilot.press("y")
        await until(pilot, lambda: notes(app), "the outcome said")
        assert notes(app)[-1].startswith("created 3g.40gb at slot "), notes(app)
        made = gpu_record(f, 0)["instances"]
        assert [i["profile"] for i in made] == ["3g.40gb"]
        entry = [e for e in f.store.audit_log() if e.action == "mig"][-1]
        assert (entry.detail["change"], entry.why) == ("create", notes(app)[-1])
        assert entry.actor.endswith(" (tui)")
        mark = len(app.notices.kept)
        await pilot.press("escape", "j", "d", "N")  # the next GPU: MIG off
        await until(pilot, lambda: notes(app, mark), "the refusal said")
        assert isinstance(app.screen, GpuScreen) and app.screen.index == 1
        assert notes(app, mark)[-1] == ("gpu-a gpu 1 is not in MIG mode (M turns it on, on an "
                                        "idle GPU): no instance can be made on it")


@pilot_test
async def test_n_refused_for_an_idle_instance_in_the_way_says_what_the_admin_can_do(
        local_fleet):
    """The agent's refusal ends "pass destroy_idle: true", a word of the protocol no admin
    types; the TUI says the key that destroys the idle instance, and the command."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [SMALL])
    f.fleet.session("gpu-a").call("mig.apply", {"gpu": 0, "profile": "4g.40gb", "start": 0})
    async with live_app(f) as (app, pilot):
        await to_host(app, pilot, "gpu-a")
        await until(pilot, lambda: (app.fleet.statuses["gpu-a"].snapshot or {}).get(
            "gpus", [{}])[0].get("instances"), "the instance on the screen")
        await pilot.press("d", "N")
        await until(pilot, lambda: isinstance(app.screen, ProfileScreen), "the profiles")
        pick(app, "7g.80gb")
        await pilot.press("enter")
        await until(pilot, lambda: notes(app), "the refusal said")
        said = notes(app)[-1]
        assert isinstance(app.screen, ProfileScreen) and "destroy_idle" not in said, said
        assert said == ("7g.80gb does not fit on gpu-a gpu 0 now: would destroy idle 4g.40gb "
                        "at slot 0; X on an idle instance in the way destroys it, or fractui "
                        "mig gpu-a 0 7g.80gb --destroy-idle makes it"), said
        assert [i["profile"] for i in gpu_record(f, 0)["instances"]] == ["4g.40gb"]


def pick(app, profile: str) -> None:
    """The picker's cursor on ``profile``."""
    menu = app.screen.query_one(OptionList)
    menu.highlighted = next(i for i in range(menu.option_count)
                            if menu.get_option_at_index(i).id == profile)


def lines(app) -> dict:
    """The picker's lines by profile, as shown (a profile that does not fit: two), and
    whether each is dimmed."""
    menu = app.screen.query_one(OptionList)
    console = Console(width=200)  # (wide: each line of the prompt whole)
    found = {}
    for i in range(menu.option_count):
        option = menu.get_option_at_index(i)
        drawn = console.render_lines(option.prompt, pad=False)
        found[option.id] = ("\n".join("".join(s.text for s in line).rstrip()
                                       for line in drawn),
                            any(s.style is not None and s.style.dim for line in drawn
                                for s in line if s.text.strip()))
    return found


@pilot_test
async def test_the_picker_says_which_profiles_fit_now_where_and_why_not(local_fleet):
    """An admin chose 7g.80gb beside a busy 3g.40gb and was refused only after: the picker
    judges each profile on the snapshot as the agent's planner would, those that fit first
    with their slot, the others dimmed with why; ``enter`` on one that does not fit says why
    and plans nothing, on one that fits plans and makes it."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [QueueConfig(name="mid", mig="3g.40gb")])
    job = f.submit("mid")
    f.until(lambda: f.states()[job.id] == "running")
    busy = gpu_record(f, 0)["instances"]
    assert [(i["profile"], i["start"]) for i in busy] == [("3g.40gb", 4)], busy
    f.fleet.session("gpu-a").call("mig.apply", {"gpu": 0, "profile": "1g.10gb", "start": 0})
    async with live_app(f) as (app, pilot):
        await until(pilot, lambda: len((app.fleet.statuses["gpu-a"].snapshot or {}).get(
            "gpus", [{}])[0].get("instances") or ()) == 2, "both instances on the screen")
        await to_host(app, pilot, "gpu-a")
        await pilot.press("d", "N")
        await until(pilot, lambda: isinstance(app.screen, ProfileScreen), "the profiles")
        shown = lines(app)
        assert list(shown)[:2] == ["2g.20gb", "1g.20gb"], shown  # those that fit first
        assert shown["2g.20gb"] == ("2g.20gb    2/7 compute, 20.0G  at slot 2", False), shown
        assert shown["7g.80gb"][1] and shown["7g.80gb"][0].endswith(
            "\n  no free placement: 3g.40gb busy at slot 4"), shown
        assert shown["4g.40gb"][0].endswith("\n  would destroy idle 1g.10gb at slot 0"), shown
        assert list(shown).index("7g.80gb") > list(shown).index("1g.10gb")
        pick(app, "7g.80gb")
        await pilot.press("enter")
        await until(pilot, lambda: notes(app), "why not said")
        assert notes(app)[-1] == ("7g.80gb does not fit on gpu-a gpu 0 now: no free "
                                  "placement: 3g.40gb busy at slot 4"), notes(app)
        assert isinstance(app.screen, ProfileScreen)  # nothing planned: still picking
        mark = len(app.notices.kept)
        pick(app, "2g.20gb")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the plan asked")
        assert app.screen.question.startswith("On gpu-a gpu 0: create 2g.20gb at slot 2"), \
            app.screen.question
        await pilot.press("y")
        await until(pilot, lambda: notes(app, mark), "the outcome said")
        assert notes(app, mark)[-1].startswith("created 2g.20gb at slot 2 "), notes(app, mark)
    assert sorted((i["profile"], i["start"]) for i in gpu_record(f, 0)["instances"]) == [
        ("1g.10gb", 0), ("2g.20gb", 2), ("3g.40gb", 4)]


@pilot_test
async def test_a_change_that_fails_unforeseen_is_said_and_frees_the_gpu_for_the_next(
        local_fleet):
    """A bug's exception in the change's worker (here the agent's call raising what no path
    expects): said as an error, and the next ``N`` is offered, not refused as under way."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [SMALL])
    async with live_app(f) as (app, pilot):
        call = app.source.call

        def broken(host, method, params, timeout_s=30.0):
            if method == "mig.apply":
                raise RuntimeError("boom")
            return call(host, method, params, timeout_s)

        app.source.call = broken
        await to_host(app, pilot, "gpu-a")
        await pilot.press("d", "N")
        await until(pilot, lambda: isinstance(app.screen, ProfileScreen), "the profiles")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the plan asked")
        await pilot.press("y")
        await until(pilot, lambda: notes(app), "the failure said")
        assert notes(app)[-1].startswith("the MIG change on gpu-a gpu 0 failed: RuntimeError: "
                                         "boom"), notes(app)
        app.source.call = call
        await pilot.press("N")
        await until(pilot, lambda: isinstance(app.screen, ProfileScreen), "offered again")


def bridges_of(state_dir: str) -> list:
    """The pids of this process's own bridges to the agent in ``state_dir`` (a local host's
    ``serve --stdio``, one a session): killing them ends the links, as an SSH drop does."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % pid) as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                words = f.read().decode(errors="replace").split("\0")
        except (OSError, ValueError, IndexError):
            continue  # (gone meanwhile)
        if parent == os.getpid() and "--stdio" in words and state_dir in words:
            found.append(int(pid))
    assert found, "no bridge of this process to %s" % state_dir
    return found


@pilot_test
async def test_a_destroy_whose_answer_is_lost_says_it_may_have_been_made(local_fleet, tmp_path):
    """The link ends while the agent is inside NVML destroying the instance: the view says
    the change may have been made and to look before asking again, where it said only that
    the connection was lost (the admin would ask again for what was done)."""
    f = local_fleet({"gpu-a": "1xA100-80GB:mig"}, [SMALL])
    made = f.fractui("mig", "gpu-a", "0", "1g.10gb", "--yes")
    assert made.returncode == 0, said(made)
    gate = tmp_path / "gate"
    async with live_app(f) as (app, pilot):
        await until(pilot, lambda: (app.fleet.statuses["gpu-a"].snapshot or {}).get(
            "gpus", [{}])[0].get("instances"), "the instance on the screen")
        app.source.call("gpu-a", "sim.hold", {"function": "nvmlGpuInstanceDestroy",
                                              "gate": str(gate)})
        await to_host(app, pilot, "gpu-a")
        await pilot.press("d", "X")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the plan asked")
        await pilot.press("y")
        await until(pilot, lambda: os.path.exists(str(gate) + ".held"), "the destroy held")
        for pid in bridges_of(f.config.hosts[0].state_dir):
            os.kill(pid, signal.SIGKILL)
        await until(pilot, lambda: notes(app), "the lost answer said")
        gate.touch()
    assert "the connection was lost waiting for the answer to mig.destroy" in notes(app)[-1]
    assert notes(app)[-1].endswith("; the change may have been made: look at the GPU here, "
                                   "read again as its agent answers, before asking for it "
                                   "again"), notes(app)


@pilot_test
async def test_n_and_x_on_a_gpu_without_mig_say_it_has_none():
    """``N`` on a GPU without MIG (an A10) told the admin to turn MIG on with ``M``, which
    then said the GPU does not support it: both say so, as ``M`` does."""
    async with settled_app((80, 24)) as (app, pilot):
        await to_host(app, pilot, "a10-1")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, GpuScreen), "the GPU's view")
        await pilot.press("N", "X", "M")
        await pilot.pause()
        none = "a10-1 gpu 0 (NVIDIA A10) does not support MIG"
        assert notes(app) == [none + ": no instance can be made on it",
                              none + ": it has no instance to destroy", none]


@pytest.mark.parametrize("keys,key,named", [((), "N", "N"),
                                            ((("gpu.create", "ctrl+n"),), "ctrl+n", "^n")])
@pilot_test
async def test_n_on_a_gpu_whose_instances_cannot_be_booked_opens_no_picker(keys, key, named):
    """Instances no GPU of the model could hold (a broken agent's record): what fits is not
    known, so ``N`` says so and opens no picker whose marks would be guesses; ``N`` as
    ``[tui] keys`` maps it (it named N, remapped a key that did nothing)."""
    async with settled_app((80, 24), keys=keys) as (app, pilot):
        app.open_gpu("h100-1", 0)
        await pilot.pause()
        gpu = app.fleet.statuses["h100-1"].snapshot["gpus"][0]
        first = gpu["instances"][0]
        gpu["instances"].append(dict(first, gi_id=99, uuid="MIG-twice"))  # on its slices
        await pilot.press(key)
        await pilot.pause()
        assert isinstance(app.screen, GpuScreen)
        assert notes(app)[-1] == ("what the instances of h100-1 gpu 0 hold is not known now: "
                                  "%s again after its next snapshot" % named), notes(app)


@pilot_test
async def test_the_picker_judges_the_profiles_again_as_the_gpu_changes_under_it():
    """In ``fractui demo`` the scheduler put a job on an idle 2g.20gb while the picker stood
    open, and the picker still said 1g.10gb would destroy that idle instance: it was judged
    once, as ``N`` was pressed. It is judged again as the view behind it is drawn (here an
    instance made under it: 7g.80gb no longer fits), the cursor kept on its profile, and
    ``enter`` on a profile that no longer fits says why and plans nothing."""
    async with settled_app((120, 36)) as (app, pilot):
        app.open_gpu("a100-1", 1)
        await pilot.pause()
        await pilot.press("N")
        await until(pilot, lambda: isinstance(app.screen, ProfileScreen), "the profiles")
        assert lines(app)["7g.80gb"] == ("7g.80gb    7/7 compute, 80.0G  at slot 0", False)
        pick(app, "7g.80gb")
        gpu = app.fleet.statuses["a100-1"].snapshot["gpus"][1]
        gpu["instances"].append({  # (made by the scheduler for a job of its own)
            "uuid": "MIG-a100-1-1-4", "gi_id": 1, "profile": "3g.40gb", "start": 4,
            "size": 4, "memory_mib": 40960, "busy": True, "pids": [1009],
            "memory_used_mib": 9000})
        await until(pilot, lambda: lines(app)["7g.80gb"][1], "7g.80gb judged again")
        assert lines(app)["7g.80gb"][0].endswith(
            "\n  no free placement: 3g.40gb busy at slot 4"), lines(app)
        menu = app.screen.query_one(OptionList)
        assert menu.get_option_at_index(menu.highlighted).id == "7g.80gb"
        await pilot.press("enter")
        await until(pilot, lambda: notes(app), "why not said")
        assert notes(app)[-1] == ("7g.80gb does not fit on a100-1 gpu 1 now: no free "
                                  "placement: 3g.40gb busy at slot 4"), notes(app)
        assert isinstance(app.screen, ProfileScreen)


@pilot_test
async def test_the_picker_closes_saying_why_once_no_instance_can_be_made_on_its_gpu():
    """MIG turned off (or the host gone) while the picker stands open: it offered profiles
    of a GPU that could have none. It says so, as ``N`` would now, and closes, making
    nothing; not while ``?`` is over it, whose help it would have closed instead."""
    async with settled_app((120, 36)) as (app, pilot):
        app.open_gpu("a100-1", 1)
        await pilot.pause()
        await pilot.press("N")
        await until(pilot, lambda: isinstance(app.screen, ProfileScreen), "the profiles")
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        picker = app.screen_stack[-2]
        app.fleet.statuses["a100-1"].snapshot["gpus"][1]["mig_mode"] = False
        assert picker.judge_again()  # (as its timer would, under the help)
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and app.screen_stack[-2] is picker
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, GpuScreen), "the picker closed")
        assert notes(app)[-1] == ("a100-1 gpu 1 is not in MIG mode (M turns it on, on an idle "
                                  "GPU): no instance can be made on it"), notes(app)


@pytest.mark.parametrize("keys,key,named", [((), "N", "N"),
                                            ((("gpu.create", "ctrl+n"),), "ctrl+n", "^n")])
@pilot_test
async def test_enter_on_a_profile_of_a_gpu_that_changed_model_under_the_picker_makes_nothing(
        keys, key, named):
    """The GPU the picker was opened on became another MIG model (its card changed at that
    index) while it stood open: ``enter`` on a profile of the model it was judged for raised
    (that profile is not the new model's). It says the GPU changed, makes nothing and
    closes; its timer says the same where no key comes. A GPU gone from its host's snapshot
    is said as ``N`` would say it. ``N`` named as ``[tui] keys`` maps it."""
    async with settled_app((120, 36), keys=keys) as (app, pilot):
        app.open_gpu("a100-1", 1)
        await pilot.pause()
        await pilot.press(key)
        await until(pilot, lambda: isinstance(app.screen, ProfileScreen), "the profiles")
        pick(app, "3g.40gb")
        app.fleet.statuses["a100-1"].snapshot["gpus"][1]["name"] = "NVIDIA A100-SXM4-40GB"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, GpuScreen), "the picker closed")
        assert notes(app)[-1] == (
            "a100-1 gpu 1 changed model while its profiles were listed (NVIDIA A100-SXM4-80GB, "
            "now NVIDIA A100-SXM4-40GB): nothing was made; %s lists its own" % named), notes(app)
        gpu = app.fleet.statuses["a100-1"].snapshot["gpus"][1]
        gpu["name"] = "NVIDIA A100-SXM4-80GB"
        mark = len(app.notices.kept)
        await pilot.press(key)  # to an H100 next: its profiles' names are the A100-80GB's
        await until(pilot, lambda: isinstance(app.screen, ProfileScreen), "the profiles")
        gpu["name"] = "NVIDIA H100 80GB HBM3"
        await until(pilot, lambda: isinstance(app.screen, GpuScreen), "closed by its timer")
        assert notes(app, mark) == [
            "a100-1 gpu 1 changed model while its profiles were listed (NVIDIA A100-SXM4-80GB, "
            "now NVIDIA H100 80GB HBM3): nothing was made; %s lists its own" % named], \
            notes(app, mark)
        gpu["name"] = "NVIDIA A100-SXM4-80GB"
        mark = len(app.notices.kept)
        await pilot.press(key)  # and gone from its host's snapshot: said as N would say it
        await until(pilot, lambda: isinstance(app.screen, ProfileScreen), "the profiles")
        app.fleet.statuses["a100-1"].snapshot["gpus"].remove(gpu)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, GpuScreen), "the picker closed")
        assert notes(app, mark) == ["gpu 1 is not in a100-1's snapshot: no instance can be "
                                    "made on it"], notes(app, mark)


@pilot_test
async def test_a_destroy_or_mode_change_confirmed_after_its_gpu_changed_does_nothing():
    """The GPU changed while ``X``'s or ``M``'s plan stood asked (a process came on the idle
    instance, the GPU left its host's snapshot, its mode flipped by another): yes carried out
    the plan confirmed, judged on the GPU as it was. It is planned again as it is confirmed;
    where that plan is not the one asked, it is said and nothing is done."""
    async with settled_app((120, 36)) as (app, pilot):
        app.open_gpu("a100-1", 1)
        await pilot.pause()
        snapshot = app.fleet.statuses["a100-1"].snapshot
        gpu = snapshot["gpus"][1]
        idle = {"uuid": "MIG-idle", "gi_id": 1, "profile": "1g.10gb", "start": 0, "size": 1,
                "memory_mib": 9856, "busy": False, "pids": [], "memory_used_mib": 0}
        gpu["instances"].append(idle)
        await pilot.press("X")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the plan asked")
        assert app.screen.question.startswith("Destroy idle 1g.10gb at slot 0 (MIG-idle)")
        idle.update(busy=True, pids=[4242])
        await pilot.press("y")
        await until(pilot, lambda: notes(app), "the change said")
        assert notes(app) == [
            "a100-1 gpu 1 changed while the change was asked; nothing was done: 1g.10gb at "
            "slot 0 (MIG-idle) has processes (pids 4242): an instance in use is never "
            "destroyed"], notes(app)
        gpu["instances"].remove(idle)
        for changed, words in (
                (lambda: snapshot["gpus"].remove(gpu), "gpu 1 is not in a100-1's snapshot"),
                (lambda: gpu.update(mig_mode=False, mig_pending=False),
                 "its plan now would turn MIG mode on on a100-1 gpu 1")):
            mark = len(app.notices.kept)
            await pilot.press("M")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the plan asked")
            assert app.screen.question.startswith("Turn MIG mode off on a100-1 gpu 1")
            changed()
            await pilot.press("y")
            await until(pilot, lambda: notes(app, mark), "the change said")
            assert notes(app, mark)[0].startswith(
                "a100-1 gpu 1 changed while the change was asked; nothing was done: " + words
            ), notes(app, mark)
            if gpu not in snapshot["gpus"]:
                snapshot["gpus"].insert(1, gpu)
