"""A MIG profile given by hand (``fractui place --profile``, completed by the executor as the
place command does) must hold what the job's queue asks for; a larger one is the admin's to
give, on a GPU model whose profiles are named otherwise too."""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, Optional

import pytest

from remote_agent.gpu.models import models

from fractui.config import QueueConfig
from fractui.sched.manual import Unfit, complete, hand_slot
from fractui.sched.fleetview import facts
from fractui.store.model import PENDING, PLACED, Job, Slot
from tests.test_sched_charge import UID, view_of


def placed_by_hand(model: str, profile: str, reported: Optional[Dict[str, int]] = None,
                   **asks: object) -> Slot:
    """The slot the executor completes for a job of a queue asking ``asks`` placed by hand on
    GPU 0 of an idle host of ``model``, MIG on, with ``profile``; ``reported``: the profiles'
    MiB as its agent reports them (mig_profile_mib)."""
    queue = QueueConfig(name="q", **asks)  # type: ignore[arg-type]
    job = Job(1, "q", "t", "n", ("x",), queue.request(), PLACED, 0.0, 0.0, manual=True)
    view = view_of(models()[model], True, 1)
    if reported is not None:
        view.gpu_records()[0]["mig_profile_mib"] = reported
    return complete(replace(job, slot=Slot("h", (0,), profile)), view, UID, [])


@pytest.mark.parametrize("profile", ["3g.47gb", "4g.47gb", "7g.94gb"])
def test_a_larger_profile_of_a_model_without_the_queues_is_given(profile):
    """3g.40gb is no profile of an H100 NVL; its 3g.47gb holds as much compute and more
    memory (it was refused as if no profile of the GPU held what the queue asks for), by the
    executor and by `fractui place` alike."""
    assert placed_by_hand("NVIDIA H100 NVL", profile, mig="3g.40gb").profile == profile
    job = Job(1, "q", "t", "n", ("x",), QueueConfig(name="q", mig="3g.40gb").request(),
              PENDING, 0.0, 0.0)
    view = view_of(models()["NVIDIA H100 NVL"], True, 1)
    asked = Slot("h", (0,), profile)
    assert hand_slot(job, asked, facts(view), UID) == replace(
        asked, charge=round(int(profile[0]) / 7, 6))


def test_the_memory_of_two_models_profiles_is_compared_as_their_table_gives_it():
    """An A100 40GB's 7g.40gb, which its agent reports as 40192 MiB, holds what a 3g.40gb
    does (40779 MiB on an H100, by the table, which reports none lower): compared with the
    report, it was refused."""
    assert placed_by_hand("NVIDIA A100-SXM4-40GB", "7g.40gb", {"7g.40gb": 40192},
                          mig="3g.40gb").profile == "7g.40gb"
    with pytest.raises(Unfit, match="3g.20gb holds less"):
        placed_by_hand("NVIDIA A100-SXM4-40GB", "3g.20gb", {"7g.40gb": 40192}, mig="3g.40gb")


@pytest.mark.parametrize("model,profile,says", [
    ("NVIDIA H100 NVL", "2g.24gb", "2 of 7 compute slices, 23.4 GiB"),
    ("NVIDIA H100 NVL", "1g.24gb", "1 of 7 compute slices, 23.4 GiB"),
    ("NVIDIA A30", "4g.24gb", "4 of 4 compute slices, 24 GiB")])
def test_a_smaller_profile_of_a_model_without_the_queues_is_refused(model, profile, says):
    with pytest.raises(Unfit) as err:
        placed_by_hand(model, profile, mig="3g.40gb")
    assert str(err.value) == (
        "job 1 of queue q asks for 3g.40gb, which %s has not: it needs a profile holding 3 of "
        "7 compute slices and 39.8 GiB or more on GPU 0 of h; %s holds less (%s)" % (
            model, profile, says))


def test_the_queues_own_profile_and_a_larger_one_are_given_a_smaller_refused():
    assert placed_by_hand("NVIDIA A100-SXM4-80GB", "4g.40gb", mig="3g.40gb").profile == \
        "4g.40gb"
    with pytest.raises(Unfit, match="needs 3g.40gb or larger on GPU 0 of h; 2g.20gb holds"):
        placed_by_hand("NVIDIA A100-SXM4-80GB", "2g.20gb", mig="3g.40gb")
