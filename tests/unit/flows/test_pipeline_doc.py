"""docs/pipeline.md must describe the pipeline the code declares."""

from __future__ import annotations

from pathlib import Path

from flows import cookies, fields
from flows.pipeline import TABLES

DOC = Path(__file__).resolve().parents[3] / "docs" / "pipeline.md"


def section_rows(heading: str) -> list[list[str]]:
    """Return the cells of the first markdown table under ``## heading``."""
    lines = DOC.read_text().splitlines()
    start = lines.index(f"## {heading}")
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # drop header and separator


def test_table_list_and_order_match_the_declarations():
    documented = [
        (
            int(num),
            name,
            stage,
            miss,
            () if nxt == "-" else tuple(n.strip() for n in nxt.split(",")),
        )
        for num, name, stage, miss, nxt, _purpose in section_rows("Tables")
    ]
    declared = [(t.table_id, t.name, t.stage.value, t.miss.value, t.next_names) for t in TABLES]
    assert documented == declared


def test_register_map_matches_the_declarations():
    documented = [(bits, name) for bits, name, _meaning in section_rows("Register map")]
    assert documented == [(f.spec(), f.name) for f in fields.REG_FIELDS]


def test_marks_match_the_declarations():
    documented = [
        (mark, field, int(value)) for mark, field, value, _meaning in section_rows("Marks")
    ]
    assert documented == [(m.name, m.field.name, m.value) for m in fields.MARKS]


def test_cookie_layout_matches_the_code():
    documented = [(bits, part) for bits, part, _meaning in section_rows("Cookie layout")]
    round_hi = cookies.ROUND_SHIFT + cookies.ROUND_BITS - 1
    cat_hi = cookies.CATEGORY_SHIFT + cookies.CATEGORY_BITS - 1
    assert documented == [
        (f"{round_hi}..{cookies.ROUND_SHIFT}", "round"),
        (f"{cat_hi}..{cookies.CATEGORY_SHIFT}", "category"),
        (f"{cookies.TABLE_SHIFT + cookies.TABLE_BITS - 1}..{cookies.TABLE_SHIFT}", "table"),
        (f"{cookies.OBJECT_BITS - 1}..0", "object id"),
    ]
    assert cookies.TABLE_SHIFT + cookies.TABLE_BITS == cookies.CATEGORY_SHIFT
    assert cookies.TABLE_SHIFT == cookies.OBJECT_BITS
    categories = section_rows("Cookie layout")[1][2]
    for category in cookies.Category:
        assert f"{category.value} {category.name.lower().replace('_', ' ')}" in categories


def test_doc_states_the_openflow_version_and_no_normal():
    text = DOC.read_text()
    assert "OpenFlow **1.3**" in text and "No NORMAL action" in text
