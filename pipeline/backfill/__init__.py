"""The backfill stage: webhooks the providers never delivered, rebuilt from their REST APIs.

Cal.com sends a webhook once and never retries a non-2xx; Retell retries three times. An
outage outside Switchboard (a network partition, a bad TLS change, a wrong webhook URL, the
provider's own incident) loses those events for good, unless someone asks the providers'
APIs what happened. This stage does, and writes every missing event to the same webhook
topic, shaped as the provider would have sent it, with the event id the webhook would have
had; the normal apply path does the rest, so a webhook arriving later, or a second
backfill, changes nothing (docs/backfill.md).

Flow, top to bottom: ``transport`` (auth, request budget, 429/Retry-After) → ``retell_api``
/ ``calcom_api`` (listing and paging) → ``retell_events`` / ``calcom_events`` (which
webhooks an API object owes, and their bodies) → ``ledger`` + ``plan`` (what MySQL already
has) → ``run`` (judge, write with ``writer``, wait, ``watermark``) → ``periodic``.
Imports only the core; the command (``pipeline.cli.backfill``) passes in the apply path's
dry run as the judge of attribution.
"""
