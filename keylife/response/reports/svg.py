"""Hand-drawn inline SVG charts for the HTML report: stacked columns, a line, horizontal bars.

Server-side, no library and no external resource; every mark carries ``data-value`` so a browser test
can tell a chart with data from an empty frame. Text goes through ``html.escape``.
"""

from __future__ import annotations

from html import escape

W, H, PAD_L, PAD_B, PAD_T = 640, 240, 48, 40, 12
PALETTE = ("#4e79a7", "#59a14f", "#edc948", "#bab0ac", "#f28e2b", "#e15759", "#76716f", "#b07aa1", "#9c755f")


def _frame(title: str, body: str, legend: str = "") -> str:
    return (f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">'
            f'<line class="axis" x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - 8}" y2="{H - PAD_B}" stroke="#333"/>'
            f'<line class="axis" x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#333"/>'
            f"{body}</svg>{legend}</figure>")  # fmt: skip


def _legend(names: list[str]) -> str:
    items = "".join(f'<li><span style="background:{PALETTE[i % len(PALETTE)]}"></span>{escape(n)}</li>'
                    for i, n in enumerate(names))  # fmt: skip
    return f'<ul class="legend">{items}</ul>'


def _ticks(top: float, fmt: str = "{:g}") -> str:
    out = []
    for i in range(5):
        value = top * i / 4
        y = H - PAD_B - (H - PAD_B - PAD_T) * i / 4
        out.append(f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{fmt.format(value)}</text>')
    return "".join(out)


def stacked_columns(title: str, labels: list[str], series: dict[str, list[int]]) -> str:
    """One column per label, one stacked segment per series (counts)."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    top = max([*totals, 1])
    width = (W - PAD_L - 16) / max(1, len(labels))
    scale = (H - PAD_B - PAD_T) / top
    parts = [_ticks(top, "{:.0f}")]
    for i, label in enumerate(labels):
        x, y = PAD_L + 4 + i * width, H - PAD_B
        for j, (name, values) in enumerate(series.items()):
            h = values[i] * scale
            if values[i]:
                parts.append(f'<rect class="mark" data-value="{values[i]}" x="{x:.1f}" y="{y - h:.1f}" '
                             f'width="{width * 0.8:.1f}" height="{h:.1f}" fill="{PALETTE[j % len(PALETTE)]}">'
                             f"<title>{escape(label)} {escape(name)}: {values[i]}</title></rect>")  # fmt: skip
            y -= h
        parts.append(f'<text x="{x + width * 0.4:.1f}" y="{H - PAD_B + 14}" text-anchor="middle" font-size="10">'
                     f"{escape(label)}</text>")  # fmt: skip
    return _frame(title, "".join(parts), _legend(list(series)))


def line(title: str, labels: list[str], values: list[float | None]) -> str:
    """A share (0..1) over time as a line with a dot per known value."""
    step = (W - PAD_L - 24) / max(1, len(labels) - 1)
    span = H - PAD_B - PAD_T
    points, parts = [], [_ticks(100, "{:.0f}%")]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = PAD_L + 8 + i * step
        parts.append(
            f'<text x="{x:.1f}" y="{H - PAD_B + 14}" text-anchor="middle" font-size="10">{escape(label)}</text>'
        )
        if value is None:
            continue
        y = H - PAD_B - value * span
        points.append(f"{x:.1f},{y:.1f}")
        parts.append(f'<circle class="mark" data-value="{value}" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{PALETTE[0]}">'
                     f"<title>{escape(label)}: {value * 100:.1f}%</title></circle>")  # fmt: skip
    if points:
        parts.insert(1, f'<polyline points="{" ".join(points)}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>')
    return _frame(title, "".join(parts))


def bars(title: str, labels: list[str], values: list[int]) -> str:
    """Vertical bars, one per label (a distribution, or a ranking)."""
    top = max([*values, 1])
    width = (W - PAD_L - 16) / max(1, len(labels))
    scale = (H - PAD_B - PAD_T) / top
    parts = [_ticks(top, "{:.0f}")]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = PAD_L + 4 + i * width
        if value:
            parts.append(f'<rect class="mark" data-value="{value}" x="{x:.1f}" y="{H - PAD_B - value * scale:.1f}" '
                         f'width="{width * 0.8:.1f}" height="{value * scale:.1f}" fill="{PALETTE[4]}">'
                         f"<title>{escape(label)}: {value}</title></rect>")  # fmt: skip
        parts.append(f'<text x="{x + width * 0.4:.1f}" y="{H - PAD_B + 14}" text-anchor="middle" font-size="10">'
                     f"{escape(label[:14])}</text>")  # fmt: skip
    return _frame(title, "".join(parts))
