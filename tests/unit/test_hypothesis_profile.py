"""The Hypothesis profile tests/conftest.py loads: no wall-clock deadline anywhere, and the
same examples on every CI run."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings


def test_no_example_has_a_deadline() -> None:
    assert settings.default.deadline is None


def test_ci_draws_the_same_examples_every_run() -> None:
    if os.environ.get("HYPOTHESIS_PROFILE"):
        pytest.skip("the profile was chosen by HYPOTHESIS_PROFILE")
    under_ci = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
    assert settings.default.derandomize is under_ci
