"""Loki's label strings (``{name="value", ...}``) as Loki reads and writes them: the part of the
Loki fake that follows PromQL's ``ParseMetric`` and Prometheus' ``labels.String()`` (Go quoting).
"""

from __future__ import annotations

import re

_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
NAME_RE = re.compile(rf"^{_NAME}$")
_STRING = r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|`[^`]*`'
_PAIR_RE = re.compile(rf"\s*({_NAME})\s*=\s*({_STRING})\s*")
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|[abfnrtv\\'\"]|.)")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] in "xuU":
        return chr(int(code[1:], 16))
    if code[0] in "01234567" and len(code) == 3:
        return chr(int(code, 8))
    if code in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[code]
    if code in "\\'\"":
        return code
    raise ValueError(f"unknown escape sequence \\{code}")


def _unquote(token: str) -> str:
    if token[0] == "`":
        return token[1:-1]
    return _ESCAPE_RE.sub(_unescape, token[1:-1])


def go_quote(value: str) -> str:
    """Go's strconv.Quote for the characters labels hold, as Prometheus' labels.String() writes them."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out) + '"'


def render_labels(pairs: list[tuple[str, str]]) -> str:
    """Prometheus ``labels.String()``: ``{a="x", b="y"}`` in the order given."""
    return "{" + ", ".join(f"{name}={go_quote(value)}" for name, value in pairs) + "}"


def parse_labels(text: str, *, strict_order: bool) -> list[tuple[str, str]]:
    """``{name="value", ...}`` as PromQL's ParseMetric reads it: pairs in the order written, empty
    values dropped (``WithoutEmpty``). ``ValueError`` when it does not parse."""
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError('1:1: parse error: unexpected label set, expected "{" ... "}"')
    inner, pairs, pos = body[1:-1], [], 0
    while pos < len(inner) and inner[pos:].strip():
        match = _PAIR_RE.match(inner, pos)
        if match is None:
            raise ValueError(f"1:{pos + 2}: parse error: unexpected character inside braces: {inner[pos : pos + 1]!r}")
        pairs.append((match.group(1), _unquote(match.group(2))))
        pos = match.end()
        if pos < len(inner):
            if inner[pos] != ",":
                raise ValueError(f'1:{pos + 2}: parse error: unexpected {inner[pos]!r} in label set, expected ","')
            pos += 1
    names = [name for name, _ in pairs]
    if strict_order and names != sorted(names):
        raise ValueError("label names are not sorted (Loki would sort them; this fake is strict)")
    return [(name, value) for name, value in pairs if value != ""]
