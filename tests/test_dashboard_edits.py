"""The edits of asv's published pages (tools/reporting/dashboard.py), without a browser or a publish."""

import pytest

from tools.reporting.dashboard import PAGE_EDITS, one_machine_pages


def _pages(tmp_path):
    """Pages holding exactly the texts asv 0.6.6's hold where PAGE_EDITS apply."""
    for name in {name for name, _, _ in PAGE_EDITS}:
        (tmp_path / name).write_text("\n".join(f"// before\n{old}\n// after" for n, old, _ in PAGE_EDITS if n == name))
    return {name: (tmp_path / name).read_text() for name, _, _ in PAGE_EDITS}


def test_edits_apply_once_and_quote_the_machine(tmp_path):
    _pages(tmp_path)
    one_machine_pages(tmp_path, 'cpu-"2core')
    edited = {name: (tmp_path / name).read_text() for name, _, _ in PAGE_EDITS}
    assert '["cpu-\\"2core"]' in edited["graphdisplay.js"]  # a JS string literal, quotes escaped
    assert "estimators-legend" in edited["index.html"] and ".text('n/a')" in edited["summarylist.js"]
    one_machine_pages(tmp_path, 'cpu-"2core')  # a second publish step: nothing changes
    assert {name: (tmp_path / name).read_text() for name in edited} == edited


def test_pages_of_another_asv_are_refused_before_any_is_written(tmp_path):
    original = _pages(tmp_path)
    (tmp_path / "summarylist.js").write_text("// asv changed this page")
    with pytest.raises(RuntimeError, match="summarylist.js no longer holds"):
        one_machine_pages(tmp_path, "h100-80gb")
    assert (tmp_path / "graphdisplay.js").read_text() == original["graphdisplay.js"]
