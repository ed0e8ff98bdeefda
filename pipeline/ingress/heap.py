"""The garbage collector's settings of a serving ingress process.

Measured at 64 concurrent requests (gc callbacks timing each collection with the process's
CPU clock, 8 s of load): the cyclic collector took 40-70 µs of CPU per request, an eighth of
the ingress's, and found nothing to free. Two reasons:

* The young generation is collected every 700 net allocations of container objects, and the
  requests in flight keep about that many alive by themselves (request, exchange, futures,
  headers): 180-400 collections in 8 s, each walking live objects. Request garbage is freed
  by reference counting as each request ends and never needs a collection.
* Each full collection walked the ~110,000 objects that the imports and the start-up made
  (aiohttp, aiokafka, SQLAlchemy, prometheus-client), which live as long as the process:
  about 100 ms of CPU each, during which no request is answered.

:func:`settle` runs once the app has started: one full collection, then ``gc.freeze()``
moves every surviving object to the permanent generation (never walked again), and the
young generation's threshold is raised above what the requests in flight keep alive.
Cyclic garbage is still collected: it grows the young generation's count until the
threshold is reached, a few megabytes at most.
"""

from __future__ import annotations

import gc

#: Young-generation threshold: net allocations of container objects between collections.
#: With 7,000 there was no collection at all in 8 s at 64 concurrent; 20,000 leaves room
#: for 1,024 concurrent requests.
YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Freeze what the start-up made and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if young:  # 0 means the collector was disabled on purpose: leave it so
        gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
