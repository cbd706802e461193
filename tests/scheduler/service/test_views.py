"""Wire views: the UTC times of answers."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from grafos_scheduler._service._views import iso_utc

_NEAR_A_MILLISECOND = st.builds(
    lambda seconds, millis, nudge: seconds + millis / 1000 + nudge,
    st.integers(0, 4_000_000_000),
    st.integers(0, 999),
    st.sampled_from([0.0, 5e-7, -5e-7, 4.9999e-7, 1e-9, -1e-9]),
)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.floats(0, 4e9), _NEAR_A_MILLISECOND))
def test_iso_utc_is_exactly_what_datetime_says(wall: float) -> None:
    # Cached whole seconds and its own rounding must never differ from datetime's,
    # at a millisecond's edge or a second's.
    expected = dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="milliseconds")
    assert iso_utc(wall) == expected
