"""Query parameters: patterns as clearly reads them, flags and numbers, one-line errors."""

import pytest

from clearly_exporter.api.filters import QueryError, count, flag, known_state, matcher


def test_a_pattern_searches_any_field_case_insensitively_and_negates():
    match = matcher("^app\\.EMAIL")
    assert match("app.email.send", None, "u1")
    assert match("other", "app.email", "u2")
    assert not match("other", None, "u3")
    assert not matcher("email", negate=True)("app.email", None, "u")
    assert matcher("email", negate=True)("app.sms", None, "u")


def test_no_pattern_matches_all_and_negated_matches_none():
    assert matcher(None)("x") and matcher("")("x")
    assert not matcher(None, negate=True)("x")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("(", "invalid regex '(': missing ), unterminated"), ("x" * 1001, "pattern longer than")],
)
def test_bad_patterns_are_one_line_errors(pattern, message):
    with pytest.raises(QueryError) as caught:
        matcher(pattern)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_flags_and_counts():
    assert flag({"x": "TRUE"}, "x", False) and not flag({"x": "0"}, "x", True)
    assert flag({}, "x", True)
    assert count({"n": "5"}, "n") == 5
    assert count({"n": "0"}, "n") is None and count({}, "n") is None
    with pytest.raises(QueryError, match="is not a boolean"):
        flag({"x": "maybe"}, "x", False)
    with pytest.raises(QueryError, match="is negative"):
        count({"n": "-1"}, "n")
    with pytest.raises(QueryError, match="is not a whole number"):
        count({"n": "five"}, "n")


def test_a_state_is_one_a_task_can_be_in_any_case():
    assert known_state(" failure") == "FAILURE" and known_state("") is None
    with pytest.raises(QueryError, match="unknown state 'FAILED'; use one of PENDING, "):
        known_state("FAILED")
