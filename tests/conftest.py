"""Shared pytest setup. Its presence in the ``tests`` package also puts the repository root
on ``sys.path`` (pytest's rootdir-based import), so tests can ``import tests.fixtures``.

Hypothesis, for every property test:

* no ``deadline``: a wall-clock limit per example is a timed test, and on a loaded 2-core
  machine a garbage collection or a neighbour's burst can stall one example past the
  default 200 ms, which Hypothesis reports as a failure ("Flaky");
* under CI (``CI`` set, as ``.ci/run`` does) the ``ci`` profile also derandomizes: the
  examples are the same on every run, so a red CI points at the change, not at a new draw.
  Runs on a developer machine keep drawing new examples (and keep the failures they find
  in ``.hypothesis/``); a failure found there becomes an explicit ``@example``.
  ``HYPOTHESIS_PROFILE`` chooses a profile explicitly.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
_under_ci = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _under_ci else "dev"))
