"""Switchboard's benchmarks: ``make bench`` (``.venv/bin/python -m bench``).

Each benchmark measures Switchboard and a baseline in the same run and reports both, with
the ratio, in ``docs/benchmarks.md``:

* ``apply_bench``      batched ``apply_batch`` vs one transaction per event;
* ``ingress_bench``    ``switchboard ingress`` vs ``bare_server`` (verify and parse only:
                       the ceiling), driven by ``wrk`` (``wrk.py``, ``wrk_bodies.lua``);
                       ``call_inbound`` open loop (``paced``); a broker outage; py-spy
                       profiles (``profile``); optionally the ingress of an older revision;
* ``dashboard_bench``  the worker's summary API (table key lookups) vs ``old_summary``
                       (aggregate SQL over ``calls``/``appointments`` per read).

Support: ``workload`` (seeded synthetic tenants and events), ``harness`` (own database and
topics, timing, machine facts), ``loadgen`` (bounded asyncio load generator, dashboard
reads), ``servers`` (processes under test), ``report`` and ``ingress_report`` (the Markdown
and the plots).
"""
