"""Switchboard's benchmarks: ``make bench`` (``.venv/bin/python -m bench``).

Each benchmark measures Switchboard and a baseline in the same run and reports both, with
the ratio, in ``docs/benchmarks.md``:

* ``apply_bench``      batched ``apply_batch`` vs one transaction per event;
* ``ingress_bench``    ``switchboard ingress`` (1 and 2 processes) vs ``baseline_server``,
                       which applies each webhook to MySQL inside the request;
* ``dashboard_bench``  the worker's summary API (table key lookups) vs ``old_summary``
                       (aggregate SQL over ``calls``/``appointments`` per read).

Support: ``workload`` (seeded synthetic tenants and events), ``harness`` (own database and
topics, timing, machine facts), ``loadgen`` (bounded asyncio load generator), ``servers``
(processes under test), ``report`` (the Markdown).
"""
