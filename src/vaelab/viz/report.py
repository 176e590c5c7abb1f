"""One self-contained HTML report: inline CSS, images as base64 data URIs, no external URL.

The page opens offline in any browser and can be mailed or archived as a single file.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vaelab import __version__
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_text

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The page may run its own inline scripts (the latent explorer) and show its own data: images,
# and nothing else: no request can leave the file.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")  # fmt: skip

_CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #dde2ea; --accent: #2f5fb3; --bg-alt: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 2rem 1.25rem 4rem; }
h1 { font-size: 1.9rem; margin: 0 0 .25rem; }
h2 { font-size: 1.35rem; margin: 2.5rem 0 .75rem; padding-bottom: .3rem;
  border-bottom: 1px solid var(--line); }
.subtitle { color: var(--muted); margin: 0 0 1.5rem; }
a { color: var(--accent); }
nav.toc { background: var(--bg-alt); border: 1px solid var(--line); border-radius: 6px;
  padding: .75rem 1.25rem; }
nav.toc h2 { font-size: 1rem; margin: 0 0 .4rem; border: 0; padding: 0; }
nav.toc ol { margin: 0; padding-left: 1.4rem; }
section { scroll-margin-top: 1rem; }
figure { margin: 1.25rem 0; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .92rem; margin-top: .4rem; }
table.facts { border-collapse: collapse; margin: 1rem 0; font-size: .95rem; max-width: 100%; }
table.facts th, table.facts td { border-bottom: 1px solid var(--line); padding: .35rem .9rem;
  text-align: left; vertical-align: top; }
table.facts th { font-weight: 600; color: var(--muted); }
table.facts td { font-variant-numeric: tabular-nums; }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem; }
@media (max-width: 600px) { main { padding: 1rem .75rem 3rem; } h1 { font-size: 1.5rem; } }
"""


@dataclass
class Section:
    """One part of a report: a heading, plain text, a table of facts, figures.

    `text` is plain text (escaped; blank lines separate paragraphs). `figures` holds
    (caption, PNG path or PNG bytes). `table` holds key/value facts. `html` is trusted,
    already-escaped extra HTML placed after the figures.
    """

    title: str
    text: str = ""
    figures: list[tuple[str, Path | bytes]] = field(default_factory=list)
    table: dict[str, object] | None = None
    html: str | None = None


def format_value(value: object) -> str:
    """A table cell: floats to 2-4 decimals by magnitude (scientific when tiny or huge)."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # 0-d torch tensor or numpy scalar
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, list | tuple):
            return ", ".join(format_value(v) for v in value)
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return _format_float(float(value))


def _format_float(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e6 or a < 1e-3:
        return f"{v:.3e}"
    decimals = 2 if a >= 100 else 3 if a >= 1 else 4
    return f"{v:.{decimals}f}"


def _png_bytes(image: Path | bytes | str, caption: str) -> bytes:
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    if not data.startswith(_PNG_MAGIC):
        where = "the bytes given" if isinstance(image, bytes) else str(image)
        raise VaelabError(f"figure {caption!r} is not a PNG image: {where}")
    return data


def _slug(title: str, taken: set[str]) -> str:
    """A unique anchor id from a title: lowercase words joined by '-'."""
    base = "sec-" + (re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section")
    slug, k = base, 2
    while slug in taken:
        slug, k = f"{base}-{k}", k + 1
    taken.add(slug)
    return slug


def _paragraphs(text: str) -> str:
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    return "".join(f"<p>{html.escape(b)}</p>\n" for b in blocks)


def _table(facts: dict[str, object]) -> str:
    rows = "".join(
        f'<tr><th scope="row">{html.escape(str(k))}</th>'
        f"<td>{html.escape(format_value(v))}</td></tr>\n"
        for k, v in facts.items()
    )
    return f'<table class="facts"><tbody>\n{rows}</tbody></table>\n'


def _figure(caption: str, image: Path | bytes) -> str:
    data = base64.b64encode(_png_bytes(image, caption)).decode("ascii")
    cap = html.escape(caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{cap}">'
        f"<figcaption>{cap}</figcaption></figure>\n"
    )


def _section(section: Section, anchor: str) -> str:
    parts = [f'<section id="{anchor}">\n<h2>{html.escape(section.title)}</h2>\n']
    parts.append(_paragraphs(section.text))
    if section.table:
        parts.append(_table(section.table))
    parts.extend(_figure(caption, image) for caption, image in section.figures)
    if section.html:
        parts.append(section.html + "\n")
    parts.append("</section>\n")
    return "".join(parts)


def _toc(entries: list[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>\n' for a, t in entries)
    return f'<nav class="toc">\n<h2>Contents</h2>\n<ol>\n{items}</ol>\n</nav>\n'


def render_report(
    title: str, sections: Sequence[Section], subtitle: str = "", lang: str = "en"
) -> str:
    """The whole report as one self-contained HTML page (UTF-8 text) in language `lang`."""
    taken: set[str] = set()
    anchors = [_slug(s.title, taken) for s in sections]
    body = "".join(_section(s, a) for s, a in zip(sections, anchors, strict=True))
    sub = f'<p class="subtitle">{html.escape(subtitle)}</p>\n' if subtitle else ""
    return (
        f'<!DOCTYPE html>\n<html lang="{html.escape(lang)}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header>\n<h1>{html.escape(title)}</h1>\n{sub}</header>\n"
        f"{_toc([(a, s.title) for a, s in zip(anchors, sections, strict=True)])}{body}"
        f"<footer>Written by vaelab {html.escape(__version__)}.</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


def write_report(
    path: str | Path, title: str, sections: Sequence[Section], subtitle: str = "", lang: str = "en"
) -> Path:
    """Render the report and write it atomically as UTF-8; returns the path."""
    path = Path(path)
    atomic_write_text(path, render_report(title, sections, subtitle, lang))
    return path
