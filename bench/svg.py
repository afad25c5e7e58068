"""A dependency-free SVG line chart, enough to show a benchmark's curves in the README."""

from __future__ import annotations

from xml.sax.saxutils import escape

COLOURS = ("#d1495b", "#00798c", "#edae49", "#30638e")
W, H, PAD = 720, 320, 48


def line_chart(
    title: str, series: dict[str, tuple[list[float], list[int]]], mark: float | None = None
) -> str:
    """Lines for each named (x, y) series, a dashed horizontal `mark`, axes and a legend."""
    xs = [x for x_values, _ in series.values() for x in x_values] or [1.0]
    ys = [float(y) for _, y_values in series.values() for y in y_values] + [mark or 0.0]
    x_max, y_max = max(xs) or 1.0, max(ys) or 1.0

    def point(x: float, y: float) -> str:
        px = PAD + (W - 2 * PAD) * x / x_max
        py = H - PAD - (H - 2 * PAD) * y / y_max
        return f"{px:.1f},{py:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{PAD}" y="20" font-size="14">{escape(title)}</text>',
        f'<polyline points="{point(0, y_max)} {point(0, 0)} {point(x_max, 0)}" '
        'fill="none" stroke="#444"/>',
        f'<text x="{PAD - 6}" y="{PAD}" text-anchor="end">{y_max:,.0f}</text>',
        f'<text x="{W - PAD}" y="{H - PAD + 16}" text-anchor="end">{x_max:,.0f}</text>',
    ]
    if mark is not None:
        parts.append(
            f'<polyline points="{point(0, mark)} {point(x_max, mark)}" fill="none" '
            'stroke="#888" stroke-dasharray="4 4"/>'
        )
    for i, (name, (x_values, y_values)) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join(point(x, y) for x, y in zip(x_values, y_values, strict=True))
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(
            f'<text x="{W - PAD - 150}" y="{PAD + 16 * i}" fill="{colour}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
