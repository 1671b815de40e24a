"""`--wait` notices the end of a task soon after it: looks often at first, then every half second."""

from __future__ import annotations

from opencbr.cli.waiting import next_look


def test_short_tasks_are_looked_at_often_long_ones_twice_a_second():
    assert next_look(0.0) == 0.02
    assert next_look(0.5) == 0.05  # an unchanged backup: noticed within ~50 ms of its end
    assert next_look(3.0) == 0.3
    assert next_look(60.0) == 0.5
    assert next_look(60.0, longest=2.0) == 2.0
    looks, waited = 0, 0.0
    while waited < 1.0:  # the first second costs a bounded number of requests
        waited += next_look(waited)
        looks += 1
    assert 15 <= looks <= 30
