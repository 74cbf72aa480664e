"""Which reprs Celery's events may have cut, and which whole value completes one: checked
against Celery's own ``saferepr``, as its workers and producers cut them."""

from __future__ import annotations

import pytest
from celery.utils.saferepr import saferepr

from clearly_exporter.reprs import MARK_FROM, completes, cut, maybe_cut

#: What Celery keeps of args, kwargs and results in its events.
CELERY_MAXLEN = 1024

VALUES = {
    "a long string in a tuple": ("0123" * 500,),
    "a dict with a long value": {"n": "x" * 2000, "m": 5},
    "a list of long strings and dicts": ["ab" * 600, {"k": "v" * 900}],
    "many numbers": list(range(1000)),
    "a long string with dots of its own": "wait... " * 300,
}


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_a_value_celery_cut_is_completed_by_its_whole_repr_only(value: object):
    sent = saferepr(value, CELERY_MAXLEN)
    assert maybe_cut(sent)
    assert completes(sent, repr(value))
    assert not completes(sent, repr(["another", value])), "a retry's other args"
    assert not completes(sent, repr(value)[:MARK_FROM] + "another ending")


def test_dots_of_a_value_s_own_before_the_cut_are_not_the_cut():
    sent = saferepr(("wait... " * 300,), CELERY_MAXLEN)
    assert not completes(sent, repr(("wait", "z" * 3000)))


def test_celery_s_cuts_that_go_unseen():
    """A long string cut at its last space before the limit comes out short; a quote
    Celery escapes where Python's repr does not matches no whole value. Neither is
    completed (the docs say so)."""
    spaced = ("x" * 100 + " " + "y" * 3000,)
    assert not maybe_cut(saferepr(spaced, CELERY_MAXLEN))
    quoted = ("Don't" + "x" * 2000,)
    assert not completes(saferepr(quoted, CELERY_MAXLEN), repr(quoted))


def test_a_value_short_enough_to_be_whole_is_never_replaced():
    masked = "{'token': '***'}"  # an app's kwargsrepr
    assert not maybe_cut(masked) and not completes(masked, "{'token': 's3cr3t'}")
    assert not maybe_cut(None) and not completes(None, "x")
    assert not maybe_cut("x" * 2000), "long, but nothing cut"


def test_cut_says_how_much_went():
    assert cut("abcdef", 6) == "abcdef"
    assert cut("abcdef", 2) == "ab...[cut 4 characters]"
