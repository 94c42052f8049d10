"""Small HTML builders: every value from the workspace passes through :func:`esc`."""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def count(n: int | float) -> str:
    return f"{int(n):,}"


def percent(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "",
          numeric: Sequence[int] = ()) -> str:
    """A table whose header is text and whose cells are already HTML.

    ``numeric`` lists the columns whose header aligns right, over right-aligned numbers.
    """
    head = "".join(f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(content: str) -> str:
    return content if content.startswith("<td") else f"<td>{content}</td>"


def num_cell(text: str, style: str = "") -> str:
    """A right-aligned cell; ``style`` is trusted CSS made by the report (heat colours)."""
    attr = f' style="{style}"' if style else ""
    return f'<td class="num"{attr}>{text}</td>'


def compact_json(value: Any, limit: int = 220) -> str:
    """One line of JSON (floats to 6 significant digits), cut at ``limit`` characters, escaped."""
    text = json.dumps(_rounded(value), separators=(", ", ": "), ensure_ascii=False, default=str)
    return esc(text if len(text) <= limit else text[: limit - 1] + "…")


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def evidence(values: dict[str, Any]) -> str:
    """A decision's evidence as compact "key value" chips: numbers rounded, long ids cut."""
    chips = "".join(f"<span><b>{esc(k)}</b> {_short(v)}</span>" for k, v in values.items())
    return f'<div class="evidence">{chips}</div>' if chips else ""


def _short(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) and len(value) > 14:
        return f'<span title="{esc(value)}">{esc(value[:12])}…</span>'
    if isinstance(value, list | dict):
        return compact_json(value, limit=60)
    return esc(value)


def facts(items: Iterable[tuple[str, str]]) -> str:
    """A row of labelled values (label text, value HTML)."""
    cells = "".join(f'<div><span class="label">{esc(k)}</span><span class="value">{v}</span>'
                    "</div>" for k, v in items)
    return f'<div class="facts">{cells}</div>'


def plot(uri: str, alt: str) -> str:
    return f'<img class="plot" src="{uri}" alt="{esc(alt)}">'


def highlight(text: str, words: Iterable[str]) -> str:
    """Escaped ``text`` with whole-word, case-insensitive matches of ``words`` in <mark>.

    Words are normalised like CoTR's tokens (NFKC, lowercase), so the marks show exactly the
    caption words the parrot stage found in the image.
    """
    tokens = sorted({unicodedata.normalize("NFKC", w).lower() for w in words if w}, key=len,
                    reverse=True)
    if not tokens:
        return esc(text)
    pattern = re.compile(r"(?<![^\W_])(" + "|".join(map(re.escape, tokens)) + r")(?![^\W_])",
                         re.IGNORECASE)
    parts = pattern.split(unicodedata.normalize("NFKC", text))
    return "".join(f"<mark>{esc(p)}</mark>" if i % 2 else esc(p) for i, p in enumerate(parts))
