"""The one rule of who may do what (fractui.store.access), against a plain statement of it, over
identities (from the store, with or without teams of its own) x actions x jobs' teams x the
config's members."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from fractui.config import TeamConfig
from fractui.store.access import (ACTIONS, ADMIN_ACTIONS, Denied, Roster, check, refusal)
from fractui.store.base import Identity

USERS = ["alice", "bob", "carol", "root"]
TEAMS = ["vision", "nlp", "infra"]


def plain_rule(user: str, admin: bool, store_teams, members: dict, action: str, team) -> bool:
    """Admins do anything; others submit, cancel, requeue and read the output for teams they
    are in (the store's teams, or where it keeps none the config's members); nothing else."""
    if admin:
        return True
    mine = store_teams if store_teams is not None else {t for t, m in members.items()
                                                        if user in m}
    return action in ("submit", "cancel", "requeue", "read") and team is not None and \
        team in mine


identities = st.builds(
    Identity, st.sampled_from(USERS), st.booleans(),
    st.one_of(st.none(), st.frozensets(st.sampled_from(TEAMS))))
rosters = st.dictionaries(st.sampled_from(TEAMS), st.frozensets(st.sampled_from(USERS)))


@settings(max_examples=3000, derandomize=True)
@given(identities, rosters, st.sampled_from(ACTIONS), st.one_of(st.none(), st.sampled_from(TEAMS)))
def test_the_rule_is_the_plain_rule_and_every_refusal_says_who_and_what_role(
        identity, members, action, team):
    roster = Roster(members)
    allowed = plain_rule(identity.user, identity.admin, identity.teams, members, action, team)
    why = refusal(identity, roster, action, team, "job 7")
    assert (why is None) == allowed, (identity, members, action, team, why)
    if why is None:
        check(identity, roster, action, team, "job 7")
        return
    with pytest.raises(Denied) as denied:
        check(identity, roster, action, team, "job 7")
    assert str(denied.value) == why
    mine = identity.teams if identity.teams is not None else {
        t for t, m in members.items() if identity.user in m}
    head = "refused: you are %s (in " % identity.user
    assert why.startswith(head) and ", not an admin" in why, why
    said_teams = why[len(head):why.index(", not an admin")]
    assert said_teams == ("no team" if not mine else "team%s %s" % (
        "s" if len(mine) > 1 else "", ", ".join(sorted(mine)))), why
    if action in ADMIN_ACTIONS or team is None:
        assert why.endswith("you must be an admin"), why
    else:
        assert why.endswith("you must be in team %s, or an admin" % team), why
    assert ("of team %s" % team if team else "of no team") in why or action in ADMIN_ACTIONS


def test_the_words_of_a_refusal():
    bob = Identity("bob", admin=False)
    roster = Roster.of([TeamConfig("vision", members=("bob", "alice")), TeamConfig("nlp")])
    assert refusal(bob, roster, "cancel", "nlp", "job 7") == (
        "refused: you are bob (in team vision, not an admin); to cancel job 7 of team nlp you "
        "must be in team nlp, or an admin")
    assert refusal(bob, roster, "cancel", "vision", "job 7") is None
    assert refusal(bob, roster, "preempt", "vision", "job 7") == (
        "refused: you are bob (in team vision, not an admin); to preempt job 7 you must be an "
        "admin")
    assert refusal(bob, roster, "mig", None, "gpu-a gpu 0") == (
        "refused: you are bob (in team vision, not an admin); to change MIG on gpu-a gpu 0 you "
        "must be an admin")


def test_with_no_members_anywhere_only_the_admin_acts_and_is_told_why():
    roster = Roster.of([TeamConfig("vision"), TeamConfig("nlp")])
    assert roster == Roster({})
    assert refusal(Identity("bob", admin=False), roster, "submit", "vision",
                   "to queue small") == (
        "refused: you are bob (in no team, not an admin; no [[teams]] of the config lists "
        "members, so only an admin acts); to submit to queue small of team vision you must be "
        "in team vision, or an admin")
    assert refusal(Identity("me", admin=True), roster, "configure", None, "quotas") is None


def test_a_store_that_keeps_teams_is_believed_over_the_config():
    """PostgreSQL's roles say the teams: the config's members neither add nor take away."""
    roster = Roster.of([TeamConfig("vision", members=("bob",))])
    bob = Identity("bob", admin=False, teams=frozenset({"nlp"}))
    assert refusal(bob, roster, "requeue", "nlp", "job 1") is None
    assert refusal(bob, roster, "requeue", "vision", "job 1").startswith(
        "refused: you are bob (in team nlp, not an admin); to requeue job 1 of team vision")


def test_an_unknown_action_is_a_bug_not_a_refusal():
    with pytest.raises(ValueError):
        refusal(Identity("me", admin=True), Roster(), "delete")
