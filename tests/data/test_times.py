"""Future times of the future forecast (times.future_times)."""

import pytest

from lstm_ctl.data.times import future_times


@pytest.mark.parametrize("cells, expected", [
    (["1871", "1872", "1873"], ["1874", "1875"]),
    (["0.5", "1.0", "1.5"], ["2", "2.5"]),
    (["1974Q3", "1974Q4"], ["1975Q1", "1975Q2"]),
    (["1995-11", "1995-12"], ["1996-01", "1996-02"]),
    (["2001-12-01", "2001-12-08", "2001-12-15"], ["2001-12-22",
                                                   "2001-12-29"]),
    (["2001-01-31", "2001-02-28", "2001-03-31"], ["2001-04-30",
                                                   "2001-05-31"]),
    (["2020-01-01T00:00:00", "2020-01-01T01:00:00", "2020-01-01T02:00:00"],
     ["2020-01-01T03:00:00", "2020-01-01T04:00:00"]),
])
def test_regular_steps_continue(cells, expected):
    assert future_times(cells, 2) == expected


@pytest.mark.parametrize("cells", [
    ["1", "2", "4"],                          # a gap
    ["2001-01-01", "2001-01-02", "2001-01-09"],
    ["1995-01", "1995-03"],
    ["7"],
])
def test_no_regular_step_gives_none(cells):
    assert future_times(cells, 2) is None
