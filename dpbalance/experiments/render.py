"""How the reproduction report is written: number formats, section content, and the Markdown file.

Experiments describe a section as blocks — paragraphs, tables of preformatted cells, figures, sub-headings —
and this module alone decides how they look in Markdown (tables through ``tabulate``).
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..results.report import md_table


# ---------------------------------------------------------------------------- numbers
def fnum(v, digits: int = 3) -> str:
    """A number for a table: thousands separators from 1,000, three significant digits below 10."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, numbers.Integral):
        return f"{v:,}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits}g}"


def pct(v) -> str:
    """A relative change as a signed percentage (``0.052`` → ``+5.2 %``)."""
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v * 100:+.1f} %"


def ratio(a, b) -> float:
    """a / b, or nan when either is missing, zero or not finite."""
    if a is None or b is None or not b or not math.isfinite(a) or not math.isfinite(b):
        return math.nan
    return a / b


def gain(r, ref, field_: str = "throughput_tok_s") -> float:
    """Relative change of a result's field over a reference result's (nan when either is missing)."""
    if r is None or ref is None:
        return math.nan
    return ratio(getattr(r, field_), getattr(ref, field_)) - 1


# ---------------------------------------------------------------------------- sections
@dataclass
class Section:
    """The content of one report section, as blocks in order."""

    blocks: list[tuple[str, object]] = field(default_factory=list)

    def text(self, *paragraphs: str) -> Section:
        self.blocks += [("text", p) for p in paragraphs if p]
        return self

    def heading(self, title: str) -> Section:
        self.blocks.append(("heading", title))
        return self

    def table(self, header: list[str], rows: list[list[str]]) -> Section:
        self.blocks.append(("table", (header, rows)))
        return self

    def figure(self, path: Path, alt: str) -> Section:
        self.blocks.append(("figure", (Path(path), alt)))
        return self

    def bullets(self, items: list[str]) -> Section:
        if items:
            self.blocks.append(("bullets", items))
        return self

    def markdown(self, out_dir: Path) -> str:
        parts = []
        for kind, data in self.blocks:
            if kind == "text":
                parts.append(str(data))
            elif kind == "heading":
                parts.append(f"#### {data}")
            elif kind == "table":
                header, rows = data
                parts.append(md_table(header, rows))
            elif kind == "figure":
                path, alt = data
                parts.append(f"![{alt}]({path.relative_to(out_dir).as_posix()})")
            elif kind == "bullets":
                parts.append("\n".join(f"- {b}" for b in data))
        return "\n\n".join(parts)


def anchor(title: str, number: int) -> str:
    """The GitHub heading anchor of ``## {number}. {title}``."""
    t = re.sub(r"[^\w\- ]", "", f"{number}. {title}".lower())
    return t.replace(" ", "-")


def write_markdown(
    path: Path,
    *,
    title: str,
    preamble: list[str],
    sections: list[tuple[str, Section, list[str]]],
    closing: tuple[str, list[str]],
) -> Path:
    """The report: title, preamble paragraphs, a table of contents, one numbered section per
    (title, content, notes), and a closing bullet list (title, items). Written atomically."""
    out_dir = path.parent
    all_titles = [t for t, _, _ in sections] + [closing[0]]
    md = [f"# {title}", ""]
    for p in preamble:
        md += [p, ""]
    md += ["## Contents", ""]
    md += [f"{i}. [{t}](#{anchor(t, i)})" for i, t in enumerate(all_titles, 1)]
    md.append("")
    for i, (t, sec, notes) in enumerate(sections, 1):
        md += [f"## {i}. {t}", "", sec.markdown(out_dir), ""]
        md += [f"> Note: {n}\n" for n in notes]
    md += [f"## {len(all_titles)}. {closing[0]}", ""]
    md += [f"- {item}" for item in closing[1]]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(md) + "\n")
    tmp.replace(path)
    return path
