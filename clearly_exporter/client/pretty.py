"""Argument and result reprs shown as Python shows them, highlighted, never evaluated.

Celery sends args, kwargs and results as reprs. They are parsed with ``ast`` (parsed
only: nothing in them runs) and laid out as ``pprint`` would: on one line when they
fit, else one element a line. A repr that does not parse (Celery cut it at 1024
characters, or an object's ``<...>`` repr) is shown as it came, generically highlighted.
"""

from __future__ import annotations

import ast

from rich.highlighter import ReprHighlighter
from rich.text import Text

STRING = "green"
NUMBER = "cyan"
CONSTANT = "italic magenta"
CALL = "bold blue"
#: Reprs longer than this are not parsed (a Celery event carries at most 1024).
MAX_PARSE = 200_000
INDENT = 4

_fallback = ReprHighlighter()


def parse(text: str) -> ast.expr | None:
    """The expression a repr spells, or None when it is not one."""
    if len(text) > MAX_PARSE:
        return None
    try:
        return ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def pretty(text: str, column: int = 0, width: int = 100) -> Text:
    """``text`` highlighted, starting at ``column``; lines past ``width`` are broken up."""
    node = parse(text)
    if node is not None:
        try:
            return _Layout(width).node(node, column, column)
        except RecursionError:
            pass
    return _fallback(Text(text))


def _styled(text: str, style: str = "") -> Text:
    """Text whose style covers only itself, not what is appended to it later."""
    out = Text()
    out.append(text, style)
    return out


def _constant(value: object) -> Text:
    if isinstance(value, str | bytes):
        return _styled(repr(value), STRING)
    if value is None or isinstance(value, bool):
        return _styled(repr(value), CONSTANT)
    if value is Ellipsis:
        return _styled("...")
    return _styled(repr(value), NUMBER)


class _Layout:
    """pprint's rule over the tree: one line if it fits, else one element a line."""

    def __init__(self, width: int) -> None:
        self.width = width

    def node(self, node: ast.expr, column: int, indent: int) -> Text:
        flat = self.flat(node)
        parts = self.parts(node)
        if parts is None or column + flat.cell_len <= self.width:
            return flat
        opening, items, closing = parts
        inner = indent + INDENT
        out = opening.copy()
        for prefix, child in items:
            out.append("\n" + " " * inner)
            out.append_text(prefix)
            out.append_text(self.node(child, inner + prefix.cell_len, inner))
            out.append(",")
        out.append("\n" + " " * indent + closing)
        return out

    def parts(self, node: ast.expr) -> tuple[Text, list[tuple[Text, ast.expr]], str] | None:
        """Opening, (prefix, element) pairs and closing of a container; None for atoms."""
        if isinstance(node, ast.Tuple):
            return Text("("), [(Text(), e) for e in node.elts], ")"
        if isinstance(node, ast.List):
            return Text("["), [(Text(), e) for e in node.elts], "]"
        if isinstance(node, ast.Set):
            return Text("{"), [(Text(), e) for e in node.elts], "}"
        if isinstance(node, ast.Dict):
            items = []
            for key, value in zip(node.keys, node.values, strict=True):
                prefix = _styled("**") if key is None else self.flat(key) + ": "
                items.append((prefix, value))
            return Text("{"), items, "}"
        if isinstance(node, ast.Call):
            items = [(Text(), a) for a in node.args]
            for kw in node.keywords:
                items.append((Text(f"{kw.arg}=" if kw.arg else "**"), kw.value))
            return _styled(ast.unparse(node.func), CALL) + "(", items, ")"
        return None

    def flat(self, node: ast.expr) -> Text:
        if isinstance(node, ast.Constant):
            return _constant(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
            return _styled(ast.unparse(node), NUMBER)
        if isinstance(node, ast.Starred):
            return _styled("*") + self.flat(node.value)
        parts = self.parts(node)
        if parts is None:
            return _styled(ast.unparse(node))
        opening, items, closing = parts
        out = opening.copy()
        for i, (prefix, child) in enumerate(items):
            if i:
                out.append(", ")
            out.append_text(prefix)
            out.append_text(self.flat(child))
        if isinstance(node, ast.Tuple) and len(items) == 1:
            out.append(",")
        out.append(closing)
        return out
