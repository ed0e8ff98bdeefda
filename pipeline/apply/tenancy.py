"""Tenant attribution by the rules of docs/data-model.md, and nothing else.

An event is attributed to a company only through a branch that says so: the business
phone number, then a unique agent id, then the ids our own ``call_inbound`` answer wrote
into the call's metadata (Cal.com: the event type, then ``metadata.branch_id`` vouched for
by a stored call of the same company). A call or booking already stored keeps the company
it was first attributed to (:func:`pipeline.apply.fold.attribute`). When no
rule applies the event is *unroutable* with a reason; nothing guesses. Pure: the branches
come from :func:`pipeline.apply.load.load_directory`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.providers.facts import BookingFacts, CallFacts, metadata_ids


@dataclass(frozen=True, slots=True)
class Branch:
    id: int
    company_id: int
    phone_number: str
    retell_agent_id: str | None
    calcom_event_type_id: int | None
    active: bool  # the branch and its company are both active


@dataclass(frozen=True, slots=True)
class Attribution:
    company_id: int
    branch_id: int | None


@dataclass(frozen=True, slots=True)
class Unroutable:
    reason: str


@dataclass
class Directory:
    """The branches one batch can need, indexed the ways attribution looks them up."""

    by_phone: dict[str, Branch] = field(default_factory=dict)
    by_agent: dict[str, list[Branch]] = field(default_factory=lambda: defaultdict(list))
    by_event_type: dict[int, Branch] = field(default_factory=dict)
    by_id: dict[int, Branch] = field(default_factory=dict)

    def add(self, branch: Branch) -> None:
        self.by_phone[branch.phone_number] = branch
        if branch.retell_agent_id:
            self.by_agent[branch.retell_agent_id].append(branch)
        if branch.calcom_event_type_id is not None:
            self.by_event_type[branch.calcom_event_type_id] = branch
        self.by_id[branch.id] = branch


def attribute_call(facts: CallFacts, directory: Directory) -> Attribution | Unroutable:
    return attribute_retell(facts.business_number, facts.agent_id, facts.metadata, directory)


def attribute_retell(
    business_number: str | None,
    agent_id: str | None,
    metadata: Mapping[str, Any] | None,
    directory: Directory,
) -> Attribution | Unroutable:
    """Number, then a unique active agent id, then our own call_inbound metadata.

    A number we know (its branch inactive) still says whose call it is: the agent id and
    the metadata may then only name a branch of that company (an agent id shared with
    another company's branch must not catch the call)."""
    owner = directory.by_phone.get(business_number) if business_number else None
    if owner is not None and owner.active:
        return Attribution(owner.company_id, owner.id)

    def allowed(branch: Branch) -> bool:
        return branch.active and (owner is None or branch.company_id == owner.company_id)

    if agent_id:
        candidates = [b for b in directory.by_agent.get(agent_id, []) if b.active]
        if len(candidates) == 1 and allowed(candidates[0]):
            return Attribution(candidates[0].company_id, candidates[0].id)
    company_id, branch_id = metadata_ids(metadata)
    if branch_id is not None:
        branch = directory.by_id.get(branch_id)
        if branch is not None and allowed(branch) and branch.company_id == company_id:
            return Attribution(branch.company_id, branch.id)
    if owner is not None:
        return Unroutable("branch_inactive")
    return Unroutable("no_branch_for_number" if business_number else "no_business_number")


def attribute_booking(
    facts: BookingFacts,
    directory: Directory,
    known: Attribution | None,
    voucher: Attribution | None = None,
) -> Attribution | Unroutable:
    """The appointment row of the same uid (attributed once, kept by every later event and
    replay), then the event type, then ``metadata.branch_id`` vouched for by ``voucher``.

    A booker can set ``metadata`` through the booking link's URL, so ``metadata.branch_id``
    alone routes nothing: only when the event type is not one of ours, and only to a branch
    of the company of the call named by ``metadata.retell_call_id`` (``voucher``: our agent
    booked during that call; call ids are not guessable). A known event type whose branch
    is inactive is ``branch_inactive``, whatever the metadata says."""
    if known is not None:
        return known
    if facts.event_type_id is not None:
        branch = directory.by_event_type.get(facts.event_type_id)
        if branch is not None:
            if branch.active:
                return Attribution(branch.company_id, branch.id)
            return Unroutable("branch_inactive")
    if facts.metadata_branch_id is not None and voucher is not None:
        branch = directory.by_id.get(facts.metadata_branch_id)
        if branch is not None and branch.active and branch.company_id == voucher.company_id:
            return Attribution(branch.company_id, branch.id)
    if facts.event_type_id is None:
        # Only the booking itself can attribute this event (a no-show update): park it
        # until the booking arrives (:func:`pipeline.apply.load.parked_coordinates`).
        return Unroutable("unknown_booking")
    return Unroutable("no_branch_for_event_type")
