"""Reprs laid out and highlighted from their syntax tree, never evaluated."""

from pathlib import Path

from clearly_exporter.client.pretty import NUMBER, STRING, pretty


def test_a_repr_that_fits_stays_on_one_line_as_python_wrote_it():
    text = "('a', 1, -2.5, None, True, b'x', {'k': [1, 2]}, {3}, (4,), Decimal('1.5'))"
    assert pretty(text, 0, 100).plain == text


def test_a_long_repr_is_laid_out_one_element_a_line_from_its_column():
    text = repr({"name": "ann", "roles": ["admin", "ops"], "ids": list(range(12))})
    assert pretty(text, 11, 40).plain == (
        "{\n"
        "               'name': 'ann',\n"
        "               'roles': ['admin', 'ops'],\n"
        "               'ids': [\n"
        "                   0,\n"
        "                   1,\n"
        "                   2,\n"
        "                   3,\n"
        "                   4,\n"
        "                   5,\n"
        "                   6,\n"
        "                   7,\n"
        "                   8,\n"
        "                   9,\n"
        "                   10,\n"
        "                   11,\n"
        "               ],\n"
        "           }"
    )


def test_strings_and_numbers_are_coloured():
    text = pretty("('a', 10)", 0, 100)
    styled = {text.plain[span.start : span.end]: span.style for span in text.spans}
    assert styled == {"'a'": STRING, "10": NUMBER}


def test_a_hostile_repr_is_shown_not_run(tmp_path: Path):
    target = tmp_path / "pwned"
    text = f"__import__('os').system('touch {target}')"
    assert pretty(text, 0, len(text) + 10).plain == text, "wide enough for one line"
    assert not target.exists()


def test_a_cut_or_opaque_repr_is_shown_as_it_came():
    for text in ["{'a': 'xxxx...", "<object object at 0x7f00>", "(" * 500]:
        assert pretty(text, 0, 20).plain == text
