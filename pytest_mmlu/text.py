"""Text rules shared by every message: one line of an exception, a summary's width, a test id or
subject list cut to fit, a long line wrapped (paths never broken).
"""

from __future__ import annotations

import textwrap


def first_line(exc: BaseException) -> str:
    """An exception's first line (its type's name when it says nothing), for one-line messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# The terminal summary fits WIDTH columns: a CI log or an 80-100 column terminal shows it
# unwrapped. Each test's id is a line of its own, its evaluations indented below it; long
# subject lists are shortened (the report has them in full) and long lines wrapped.
WIDTH = 100


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns: a list keeps its first item and a count
    (``high_school_geog…+2``), anything else is cut with an ellipsis."""
    if len(text) <= width:
        return text
    items = text.split(",")
    more = f"+{len(items) - 1}" if len(items) > 1 else ""
    head = items[0]
    room = width - len(more)
    return (head if len(head) <= room else head[: max(room - 1, 1)] + "…") + more


def middle_cut(text: str, width: int) -> str:
    """A test id in ``width`` columns: its start (the file) and end (the test) are kept."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep // 3] + "…" + text[-(keep - keep // 3) :]


def wrapped(line: str, width: int = WIDTH) -> list[str]:
    """``line`` in lines of at most ``width`` columns, continuations indented. A word longer
    than a line is split after a comma (a subject list); paths stay whole (copied from a log,
    a broken path is no path), so only a path longer than a line overflows."""

    words = []
    for word in line.split(" "):
        while len(word) > width - 4 and "," in word[: width - 4]:
            cut = word.rindex(",", 0, width - 4) + 1
            words.append(word[:cut])
            word = word[cut:]
        words.append(word)
    return textwrap.wrap(
        " ".join(words), width, subsequent_indent="    ", break_on_hyphens=False, break_long_words=False
    ) or [""]


def column_widths(headers: list[str], rows: list[list[str]]) -> list[int]:
    """Each column's width: its widest cell, header included."""
    return [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]


def table_line(cells: list[str], widths: list[int], right: frozenset[int] = frozenset()) -> str:
    """One line of a table: cells padded to their columns (numbers, at ``right``, on the right),
    two spaces apart."""
    return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A plain table: its header, a rule, its rows."""
    widths = column_widths(headers, rows)
    return [
        table_line(headers, widths),
        table_line(["-" * w for w in widths], widths),
        *(table_line(r, widths) for r in rows),
    ]
