"""The shared table that spreads new connections over the workers (edgeworker/balance.py)."""

from __future__ import annotations

import os

import pytest

from edgeworker import balance


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setattr(balance, "_table", None)
    balance.create()
    for wid in range(3):
        balance.reserve(wid)
    return balance._table


def test_a_worker_over_the_least_loaded_plus_slack_is_crowded(table):
    a, b = balance.Balance(0, 4), balance.Balance(1, 4)
    a.update(2)
    b.update(1)
    assert not a.crowded(2)  # 2 <= 1 + SLACK
    assert a.crowded(3)
    assert not b.crowded(1)
    b.update(0)
    assert a.crowded(2)


def test_the_least_loaded_of_several_counts(table):
    a, b, c = (balance.Balance(i, 0) for i in range(3))
    a.update(5)
    b.update(9)
    c.update(4)
    assert a.crowded(6)  # over c's 4 + 1
    assert not c.crowded(4)


def test_alone_or_with_workers_of_other_generations_never_crowded(table):
    a = balance.Balance(0, 2)
    assert not a.crowded(100)
    old = balance.Balance(1, 1)  # a worker of the previous generation, still draining
    old.update(0)
    assert not a.crowded(100)


def test_a_later_generation_takes_the_entry_over(table):
    old = balance.Balance(1, 1)
    new = balance.Balance(1, 2)  # the same id after a reload
    old.update(50)  # the draining worker no longer writes there
    a = balance.Balance(0, 2)
    assert a.crowded(2)  # against new's 0, not old's 50
    new.update(1)
    assert not a.crowded(2)
    old.leave()  # nor does its exit
    assert a.crowded(3)


def test_a_worker_that_leaves_is_not_waited_for(table):
    a, b = balance.Balance(0, 0), balance.Balance(1, 0)
    b.update(0)
    assert a.crowded(5)
    b.leave()
    assert not a.crowded(5)


def test_ids_past_the_reserved_ones_are_not_scanned_and_ids_past_the_table_not_balanced(table):
    a = balance.Balance(0, 0)
    far = balance.Balance(5, 0)  # no reserve(5): not in the scan
    far.update(0)
    assert not a.crowded(10)
    outside = balance.Balance(balance.SLOTS, 0)
    outside.update(3)
    assert not outside.crowded(1000)


def test_the_table_is_shared_with_forked_children(table):
    a = balance.Balance(0, 7)
    pid = os.fork()
    if pid == 0:  # a second worker, in a child process
        try:
            balance.Balance(1, 7).update(3)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert a.crowded(5)
    assert not a.crowded(4)
