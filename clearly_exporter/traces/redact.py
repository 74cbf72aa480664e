"""Redaction of secrets in argument and result reprs, before anything leaves.

Celery sends arguments and results as Python reprs. A well-formed repr is parsed (never
evaluated) and the values of matching dict keys replaced; a repr Celery cut short
does not parse, so matching ``'key': value`` pairs are replaced textually instead.
"""

from __future__ import annotations

import ast
import re

DEFAULT_PATTERNS = ("password|passwd|secret|token|api_?key|authorization",)
REDACTED = "'[redacted]'"
_VALUE = r"""(?:'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^,}\])]*)"""
#: An unquoted keyword value stops at white space too (tracebacks are many lines).
_WORD_VALUE = r"""(?:'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^,}\])\s]*)"""


class Redactor:
    """Replaces values whose key matches any pattern (case-insensitive)."""

    def __init__(self, patterns: tuple[str, ...] = DEFAULT_PATTERNS) -> None:
        self.enabled = bool(patterns)
        joined = "|".join(f"(?:{p})" for p in patterns) or r"(?!)"
        self.key = re.compile(joined, re.IGNORECASE)
        self._pair = re.compile(
            rf"""(['"])((?:(?!\1).)*?(?:{joined})(?:(?!\1).)*)\1(\s*:\s*){_VALUE}""",
            re.IGNORECASE,
        )
        #: ``password='x'``: keyword arguments as source lines in tracebacks show them.
        self._keyword = re.compile(
            rf"""\b(\w*(?:{joined})\w*)(\s*=\s*){_WORD_VALUE}""", re.IGNORECASE
        )

    def __call__(self, text: str | None) -> str | None:
        if text is None or not self.enabled or not self.key.search(text):
            return text
        try:
            tree = ast.parse(text, mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            text = self._pair.sub(
                lambda m: f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}{REDACTED}", text
            )
            return self._keyword.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for i, key in enumerate(node.keys):
                    if self._secret_key(key):
                        node.values[i] = ast.Constant("[redacted]")
                        changed = True
            elif isinstance(node, ast.keyword) and node.arg and self.key.search(node.arg):
                node.value = ast.Constant("[redacted]")
                changed = True
        return ast.unparse(tree) if changed else text

    def _secret_key(self, key: ast.expr | None) -> bool:
        if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
            return False
        return self.key.search(key.value) is not None
