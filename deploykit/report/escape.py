"""User-supplied strings as data in every renderer.

Matrix labels and names, divergence ids and reasons, backends' error messages, paths and run
metadata come from users and from runtimes under test.  None of them may act as markup: not as
rich markup (`[/bold]` raises, `[link=...]` makes a live link), not as HTML or Markdown in a CI
job summary (`<script>`, `<img onerror>`, an opening `<!--` that hides the rest of the page), not
as terminal escape sequences, and not as characters XML 1.0 forbids (the JUnit file would not
parse).  Each renderer passes every such string through one function here, chosen by where the
string lands.
"""

from __future__ import annotations

import html
import re
import unicodedata

from rich.text import Text

#: Unicode categories that are invisible or act on the display: controls, format characters
#: (bidi overrides, zero-width characters), surrogates, line and paragraph separators.
_HIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
_NONCHARACTERS = {"\ufffe", "\uffff"}  # outside XML 1.0's Char production


def _shown(char: str, keep: str) -> str:
    if char in keep:
        return char
    if unicodedata.category(char) in _HIDDEN_CATEGORIES or char in _NONCHARACTERS:
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def visible(value: object, keep: str = "\n\t") -> str:
    """The string with every invisible or display-changing character written out as `\\x1b`,
    `\\u202e`...: an ANSI escape or a bidi override in a label shows as text, it does not colour
    or reorder the report.  `keep` lists the whitespace a multi-line context may keep."""
    text = str(value)
    if text.isprintable():  # U+FFFE/U+FFFF are not printable either
        return text  # the common case, without a per-character walk
    return "".join(_shown(char, keep) for char in text)


def one_line(value: object) -> str:
    """`visible`, with newlines and tabs folded to one space: a string cannot forge a line of its own."""
    return re.sub(r"\s*[\n\t]\s*", " ", visible(value))


def term(value: object) -> Text:
    """A rich Text: never parsed as markup, so `[/bold]` and `[link=...]` are shown, not obeyed."""
    return Text(visible(value))


def term_line(value: object) -> Text:
    """A one-line rich Text, for a line of its own on the terminal."""
    return Text(one_line(value))


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")


def md(value: object) -> str:
    """Inline Markdown text that renders as the string itself: HTML is escaped (`<!--` cannot hide
    the rest of a job summary, `<script>` is text), emphasis, links, code, math and table pipes are
    backslash-escaped, and newlines fold to spaces so a table row stays one row."""
    escaped = html.escape(" ".join(one_line(value).split()), quote=False)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", escaped)


def md_code(value: object) -> str:
    """A Markdown code span holding the string, where it is plain (an id, a matrix name); otherwise
    the escaped text of `md`: a backtick could close the span, a pipe splits a table row even inside
    a span, and `<!--` is best kept out of the raw page wherever it goes."""
    text = " ".join(one_line(value).split())
    if re.fullmatch(r"[^`|<>&]+", text):
        return f"`{text}`"
    return md(text)


def md_block(value: object) -> str:
    """A fenced Markdown code block holding the string, lines kept (a runtime's multi-line error):
    the fence is longer than any run of backticks in it, so nothing inside can close it."""
    text = visible(value)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def xml(value: object) -> str:
    """Text XML 1.0 can carry (ElementTree escapes `<`, `&` and quotes itself): controls other than
    tab and newline, surrogates and U+FFFE/U+FFFF are written out, so the JUnit file parses."""
    return visible(value, keep="\n\t")


def html_text(value: object) -> str:
    """HTML-escaped text and attribute values, with invisible characters written out."""
    return html.escape(visible(value), quote=True)
