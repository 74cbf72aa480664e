"""Redaction of reprs: parsed ones, cut ones, nothing else touched."""

from clearly_exporter.traces.redact import Redactor

redact = Redactor()


def test_kwargs_and_nested_dict_keys_are_redacted():
    out = redact("{'user': 'bob', 'password': 'hunter2', 'opts': {'api_key': 'k-123'}}")
    assert "hunter2" not in out and "k-123" not in out
    assert "'user': 'bob'" in out
    assert out.count("[redacted]") == 2


def test_dicts_inside_args_are_redacted():
    out = redact("({'Authorization': 'Bearer xyz'}, 5)")
    assert "xyz" not in out and "5" in out


def test_a_repr_celery_cut_short_is_redacted_textually():
    out = redact("{'a': 'x', 'secret': 'abc', 'b': 'yyyyyyyyyy...")
    assert "abc" not in out and "'a': 'x'" in out


def test_values_without_matching_keys_are_unchanged():
    text = "('token bucket', {'n': 1})"
    assert redact(text) == text, "a matching word in a value is not a key"


def test_custom_patterns_and_none():
    only_card = Redactor(("card",))
    assert "4111" not in only_card("{'card_number': '4111'}")
    assert only_card("{'password': 'p'}") == "{'password': 'p'}"
    assert redact(None) is None
    assert Redactor(())("{'password': 'p'}") == "{'password': 'p'}"


def test_keyword_arguments_in_a_traceback_are_redacted():
    text = "Traceback (most recent call last):\n  login(password='pw1', user='bob')\n  token = t2"
    out = Redactor()(text)
    assert "pw1" not in out and "t2" not in out and "user='bob'" in out
