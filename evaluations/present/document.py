"""The report's document model and its two renderings: Markdown and self-contained HTML.

A report is a list of blocks (:class:`Heading`, :class:`Paragraph`, :class:`Bullets`,
:class:`Table`, :class:`Code`, :class:`Figure`); :func:`render_markdown` and :func:`render_html`
turn the same list into ``report.md`` and ``report.html`` (figures inlined as base64 PNG).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# --------------------------------------------------------------------------- document model


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    align: list[str] = field(default_factory=list)  # "l" / "r" per column (default "l")
    caption: str = ""
    collapsed: str = ""  # HTML: a collapsed <details> block with this summary line


@dataclass(frozen=True)
class Code:
    text: str
    lang: str = ""


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str
    rel: str  # path relative to the report, for Markdown


Block = Heading | Paragraph | Bullets | Table | Code | Figure

PASS, FAIL = "PASS", "FAIL"


# --------------------------------------------------------------------------- Markdown rendering

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md(text: str) -> str:
    """Escape Markdown punctuation so names like ``window_70`` render literally."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] = ()
) -> str:
    """A GitHub-flavoured Markdown table with padded columns (cells are escaped)."""
    head = [_md(h) for h in headers]
    body = [[_md(c) for c in row] for row in rows]
    widths = [max([len(head[i]), 3, *(len(r[i]) for r in body)]) for i in range(len(head))]
    aligns = [align[i] if i < len(align) else "l" for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if a == "r" else c.ljust(w)
            for c, w, a in zip(cells, widths, aligns, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    sep = (
        "| "
        + " | ".join(
            ("-" * (w - 1) + ":") if a == "r" else "-" * w
            for w, a in zip(widths, aligns, strict=True)
        )
        + " |"
    )
    return "\n".join([line(head), sep, *(line(r) for r in body)])


def render_markdown(blocks: Sequence[Block]) -> str:
    """Render the document model as Markdown."""
    parts: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append("#" * b.level + " " + _md(b.text))
        elif isinstance(b, Paragraph):
            parts.append(_md(b.text))
        elif isinstance(b, Bullets):
            parts.append("\n".join(f"- {_md(item)}" for item in b.items))
        elif isinstance(b, Table):
            table = markdown_table(b.headers, b.rows, b.align)
            parts.append(table + (f"\n\n*{_md(b.caption)}*" if b.caption else ""))
        elif isinstance(b, Code):
            fence = "````" if "```" in b.text else "```"
            parts.append(f"{fence}{b.lang}\n{b.text}\n{fence}")
        else:
            parts.append(f"![{_md(b.path.stem)}]({b.rel})\n\n*{_md(b.caption)}*")
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- HTML rendering

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 1180px; margin: 2rem auto; padding: 0 1.5rem; line-height: 1.5; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; vertical-align: top; }
th { background: #f6f8fa; text-align: left; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfcfd; }
caption { caption-side: bottom; text-align: left; color: #57606a; font-size: .85rem;
          padding-top: .3rem; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: .8rem;
      overflow-x: auto; font-size: .85rem; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .85rem; }
.pass { color: #1a7f37; font-weight: 600; }
details summary { cursor: pointer; color: #0969da; }
.fail { color: #cf222e; font-weight: 600; }
"""


def _h(text: str) -> str:
    return html.escape(str(text), quote=True)


def _cell_html(text: str, tag: str, align: str) -> str:
    cls = ' class="r"' if align == "r" else ""
    content = _h(text)
    if text in (PASS, FAIL):
        content = f'<span class="{text.lower()}">{content}</span>'
    return f"<{tag}{cls}>{content}</{tag}>"


def render_html(blocks: Sequence[Block], title: str) -> str:
    """Render the document model as a self-contained HTML page (inline CSS, embedded PNGs)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_h(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{_h(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_h(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            aligns = [b.align[i] if i < len(b.align) else "l" for i in range(len(b.headers))]
            rows = [f"<details><summary>{_h(b.collapsed)}</summary>"] if b.collapsed else []
            rows.append("<table>")
            if b.caption:
                rows.append(f"<caption>{_h(b.caption)}</caption>")
            rows.append(
                "<thead><tr>"
                + "".join(_cell_html(h, "th", a) for h, a in zip(b.headers, aligns, strict=True))
                + "</tr></thead><tbody>"
            )
            for r in b.rows:
                rows.append(
                    "<tr>"
                    + "".join(_cell_html(c, "td", a) for c, a in zip(r, aligns, strict=True))
                    + "</tr>"
                )
            rows.append("</tbody></table>")
            if b.collapsed:
                rows.append("</details>")
            out.append("\n".join(rows))
        elif isinstance(b, Code):
            out.append(f"<pre><code>{_h(b.text)}</code></pre>")
        else:
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{_h(b.path.stem)}">'
                f"<figcaption>{_h(b.caption)}</figcaption></figure>"
            )
    out += ["</body>", "</html>", ""]
    return "\n".join(out)
