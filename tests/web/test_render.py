"""The pure parts of the viewer: diffs and charts."""

from __future__ import annotations

import re

from agentlog.web.chart import score_chart
from agentlog.web.diff import diff_html, diff_stats


def test_diff_marks_lines_and_escapes_them():
    html = diff_html("a\n<b>old</b>\nc", "a\n<i>new</i>\nc", "one", "two")
    assert '<span class="del">-&lt;b&gt;old&lt;/b&gt;</span>' in html
    assert '<span class="add">+&lt;i&gt;new&lt;/i&gt;</span>' in html
    assert "<b>" not in html and "<i>" not in html
    assert diff_stats("a\nb", "a\nc\nd") == (2, 1)


def test_identical_texts_have_no_diff():
    assert "No changes" in diff_html("same", "same", "a", "b")


def test_chart_has_a_point_per_scored_iteration():
    svg = score_chart([("run <x>", {1: 4, 2: 6, 3: 9})], threshold=8)
    points = re.findall(r'<circle class="point" data-iteration="(\d+)" data-score="(\d+)"', svg)
    assert points == [("1", "4"), ("2", "6"), ("3", "9")]
    assert "run &lt;x&gt;" in svg and "<x>" not in svg and 'class="threshold"' in svg


def test_chart_of_one_iteration_and_of_nothing():
    assert score_chart([("r", {1: 5})]).count('class="point"') == 1
    assert "No scores yet" in score_chart([("r", {})])
