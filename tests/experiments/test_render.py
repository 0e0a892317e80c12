"""Report formatting: numbers, Markdown tables, sections and the table of contents."""

import math
import re

from dpbalance.experiments.render import Section, anchor, fnum, pct, ratio, write_markdown


def test_number_formats():
    assert fnum(1234567.8) == "1,234,568"
    assert fnum(123.4) == "123" and fnum(12.34) == "12.3" and fnum(0.012345) == "0.0123"
    assert fnum(14) == "14" and fnum(12345) == "12,345"  # integers stay integers
    assert fnum(None) == fnum(math.nan) == "–"
    assert pct(0.0523) == "+5.2 %" and pct(-0.1) == "-10.0 %" and pct(math.nan) == "–"
    assert ratio(3, 2) == 1.5 and math.isnan(ratio(1, 0)) and math.isnan(ratio(None, 1))


def test_section_markdown_and_report(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"png")
    sec = (
        Section()
        .text("Setting.")
        .heading("trace A")
        .table(["policy", "tok/s"], [["br0", "1,234"], ["jsq_count", "1,000"]])
        .figure(tmp_path / "fig.png", "a figure")
        .bullets(["one", "two"])
    )
    md = sec.markdown(tmp_path)
    assert md.startswith("Setting.\n\n#### trace A\n\n| policy")
    assert re.search(r"^\|:-+\|-+:\|$", md, flags=re.M)  # text left, numbers right
    assert re.search(r"^\| br0 +\| +1,234 \|$", md, flags=re.M)
    assert "![a figure](fig.png)" in md and md.endswith("- one\n- two")
    path = write_markdown(
        tmp_path / "report.md",
        title="T",
        preamble=["intro"],
        sections=[("BR-H sensitivity (β, γ, H)", sec, ["a note"])],
        closing=("End", ["x"]),
    )
    text = path.read_text()
    assert text.startswith("# T\n\nintro\n\n## Contents")
    assert "1. [BR-H sensitivity (β, γ, H)](#1-br-h-sensitivity-β-γ-h)" in text  # GitHub's anchor for that heading
    assert "## 1. BR-H sensitivity (β, γ, H)" in text and "> Note: a note" in text and "## 2. End\n\n- x" in text
    assert anchor("Anchors: the BF-IO authors' code", 3) == "3-anchors-the-bf-io-authors-code"
