"""The answer to Retell's ``call_inbound``: which agent takes the call, and what it knows.

Kept apart from the HTTP plumbing because it is the one place where tenant data reaches a
provider: the branch comes from the called number only, and the caller's context is looked
up only inside that branch's company (docs/architecture.md, invariant 6). An unknown or inactive number gets
the empty answer ``{"call_inbound": {}}`` (Retell then uses the number's default agent); it is
never routed to a guess.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.ingress.metrics import IngressMetrics
from pipeline.ingress.routing import Router
from pipeline.ingress.variables import caller_name, place_name
from pipeline.logs import mask_phone
from pipeline.providers import Envelope, retell

log = logging.getLogger(__name__)


async def answer_call_inbound(
    router: Router, metrics: IngressMetrics, envelope: Envelope, correlation_id: str
) -> dict[str, Any]:
    """The 200 body for a verified ``call_inbound`` (the empty answer while routing has not
    loaded, as for a number no branch has).

    ``dynamic_variables`` values are all strings (Retell types them ``Dict[str, str]``), and
    every one has passed :mod:`pipeline.ingress.variables` (the caller is unverified).
    ``metadata`` comes back on every later event of the call, which is how the worker can
    attribute it even when the number has since changed hands.
    """
    inbound = envelope.payload[retell.INBOUND_EVENT]
    to_number: str = inbound["to_number"]
    from_number: str = inbound["from_number"]
    if not router.loaded:
        # Not a 503: that answer is kept for an event that cannot be made durable, and
        # this one is (its record is written as always). The empty answer lets Retell use
        # the number's default agent now, instead of the phone ringing through retries.
        metrics.call_inbound.labels("unavailable", "routing_not_loaded").inc()
        log.warning("call_inbound before the routing cache loaded: the number's default agent")
        return {"call_inbound": {}}
    route = router.lookup(to_number)
    if route is None:
        reason = router.unrouted_reason(to_number)
        metrics.call_inbound.labels("unrouted", reason).inc()
        log.debug(
            "call_inbound unrouted (%s) for %s", reason, mask_phone(to_number),
            extra={"event_id": envelope.event_id},
        )  # fmt: skip
        return {"call_inbound": {}}

    variables = {
        "branch_name": place_name(route.branch_name),
        "company_name": place_name(route.company_name),
    }
    context = await router.caller_context(route.company_id, from_number)
    if context is not None:
        name = caller_name(context.customer_name)
        if name is not None:
            variables["customer_name"] = name
        elif context.customer_name:
            metrics.child(metrics.caller_lookups, "name_withheld").inc()
        if context.next_appointment is not None:
            local = context.next_appointment.astimezone(route.timezone)
            variables["next_appointment"] = local.isoformat(timespec="minutes")
    answer: dict[str, Any] = {
        "dynamic_variables": variables,
        "metadata": {
            "company_id": str(route.company_id),
            "branch_id": str(route.branch_id),
            "correlation_id": correlation_id,
        },
    }
    if route.retell_agent_id:
        answer = {"override_agent_id": route.retell_agent_id, **answer}
    metrics.call_inbound.labels("routed", "").inc()
    log.debug(  # per request: DEBUG only; switchboard_ingress_call_inbound_total counts them
        "call_inbound routed",
        extra={
            "event_id": envelope.event_id,
            "company_id": route.company_id,
            "branch_id": route.branch_id,
            "caller_known": context is not None,
        },
    )
    return {"call_inbound": answer}
