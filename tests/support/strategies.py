"""Hypothesis strategies shared by the provider tests."""

from __future__ import annotations

from hypothesis import strategies as st

# A fixed alphabet: the default one makes Hypothesis build its Unicode tables on first use,
# which trips the too-slow health check in a fresh CI checkout.
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text("ab:_-\u00e9", max_size=5)
)
json_value = json_leaf | st.just([]) | st.just({})
