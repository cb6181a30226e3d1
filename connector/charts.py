"""Self-contained HTML pages with inline SVG charts. Pure: values in, markup out.

No JavaScript and no external assets, so a report can be mailed, archived or opened offline
and still look the same. Every helper takes *plain text* and escapes it itself; the markup it
returns is safe to concatenate. Callers escape their own text with `esc`.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Colour-blind-safe (Okabe–Ito); line charts also differ by dash pattern, so print works too.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00")
DASHES = ("", "6 4", "2 3", "8 3 2 3")
BAR = "#0072b2"
LABEL_CHARS = 26  # longer labels are cut in the chart; the full text is in the tooltip

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;
margin:0 auto;max-width:1100px;padding:1.5rem}
h1{font-size:1.6rem;margin:0 0 .25rem}h2{font-size:1.2rem;margin:2rem 0 .5rem}
.meta{color:#555;margin:0 0 1rem}
.cards{display:flex;flex-wrap:wrap;gap:.75rem;margin:1rem 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.6rem .9rem;min-width:11rem}
.card b{display:block;font-size:1.4rem}.card span{color:#555;font-size:.85rem}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}figure{margin:0}
figcaption{font-weight:600;margin-bottom:.25rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}
th,td{border-bottom:1px solid #e3e3e3;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child,.text{text-align:left}
thead th{border-bottom:2px solid #999}
dl.defs dt{font-weight:600;margin-top:.5rem}dl.defs dd{margin-left:1rem;color:#333}
svg text{font:12px system-ui,sans-serif;fill:#1b1b1b}
svg{max-width:100%;height:auto}.wide{overflow-x:auto;max-width:100%}
@media (max-width:600px){body{padding:.75rem}.card{min-width:8rem}}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float) -> str:
    """Coordinates with two decimals keep the SVG small and diff-able."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _cut(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _svg(width: float, height: float, title: str, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_num(width)} {_num(height)}" '
        f'width="{_num(width)}" height="{_num(height)}" role="img" aria-label="{esc(title)}">'
        f"<title>{esc(title)}</title>{body}</svg>"
    )


def figure(caption: str, svg: str) -> str:
    return f"<figure><figcaption>{esc(caption)}</figcaption>{svg}</figure>"


def hbar_chart(
    title: str,
    items: Sequence[tuple[str, float]],
    fmt: Callable[[float], str] = lambda v: f"{v:g}",
    width: float = 520,
) -> str:
    """Horizontal bars, one row per item: long category names stay readable."""
    label_w, value_w, row_h, top = 170.0, 60.0, 22.0, 6.0
    bar_w = width - label_w - value_w
    peak = max((v for _, v in items), default=0.0)
    rows = []
    for i, (label, value) in enumerate(items):
        y = top + i * row_h
        length = bar_w * value / peak if peak > 0 else 0.0
        rows.append(
            f"<g><title>{esc(label)}: {esc(fmt(value))}</title>"
            f'<text x="{_num(label_w - 6)}" y="{_num(y + 15)}" text-anchor="end">'
            f"{esc(_cut(label))}</text>"
            f'<rect x="{_num(label_w)}" y="{_num(y + 3)}" width="{_num(length)}" '
            f'height="{_num(row_h - 6)}" fill="{BAR}"/>'
            f'<text x="{_num(label_w + length + 4)}" y="{_num(y + 15)}">{esc(fmt(value))}</text>'
            "</g>"
        )
    height = top * 2 + row_h * max(len(items), 1)
    if not items:
        rows.append(f'<text x="{_num(label_w)}" y="20">no data</text>')
    return _svg(width, height, title, "".join(rows))


def column_chart(
    title: str, items: Sequence[tuple[str, float]], width: float = 520, height: float = 220
) -> str:
    """Vertical bars with a label under each (a histogram's bins)."""
    left, bottom, top = 10.0, 24.0, 18.0
    plot_h = height - bottom - top
    slot = (width - 2 * left) / max(len(items), 1)
    peak = max((v for _, v in items), default=0.0)
    parts = [
        f'<line x1="{_num(left)}" y1="{_num(top + plot_h)}" x2="{_num(width - left)}" '
        f'y2="{_num(top + plot_h)}" stroke="#999"/>'
    ]
    for i, (label, value) in enumerate(items):
        x = left + i * slot
        bar_h = plot_h * value / peak if peak > 0 else 0.0
        y = top + plot_h - bar_h
        centre = x + slot / 2
        parts.append(
            f"<g><title>{esc(label)}: {esc(f'{value:g}')}</title>"
            f'<rect x="{_num(x + 2)}" y="{_num(y)}" width="{_num(slot - 4)}" '
            f'height="{_num(bar_h)}" fill="{BAR}"/>'
            f'<text x="{_num(centre)}" y="{_num(y - 4)}" text-anchor="middle">'
            f"{esc(f'{value:g}')}</text>"
            f'<text x="{_num(centre)}" y="{_num(height - 6)}" text-anchor="middle">'
            f"{esc(label)}</text></g>"
        )
    return _svg(width, height, title, "".join(parts))


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float | None]]  # (x, y); y None = no value (a gap)


def _segments(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Split a series at missing values: a line across a gap would invent data."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [run for run in runs if run]


def line_chart(
    title: str,
    series: Sequence[Series],
    x_label: str,
    marker: tuple[float, str] | None = None,
    width: float = 680,
    height: float = 340,
) -> str:
    """Lines over x and y both in [0, 1] (thresholds, shares, accuracies), with a legend and
    an optional vertical marker (e.g. the configured threshold)."""
    left, right, top, bottom = 46.0, 150.0, 14.0, 44.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + plot_w * x

    def py(y: float) -> float:
        return top + plot_h * (1 - y)

    parts = [_axes(px, py, plot_w, x_label, height)]
    if marker is not None:
        parts.append(_marker(px(marker[0]), top, top + plot_h, marker[1]))
    for i, s in enumerate(series):
        colour, dash = PALETTE[i % len(PALETTE)], DASHES[i % len(DASHES)]
        parts.append(_series(s, colour, dash, px, py))
        parts.append(_legend_entry(s.name, colour, dash, left + plot_w + 16, top + 10 + i * 20))
    return _svg(width, height, title, "".join(parts))


def _axes(
    px: Callable[[float], float],
    py: Callable[[float], float],
    plot_w: float,
    x_label: str,
    height: float,
) -> str:
    parts = []
    for k in range(5):
        y = k / 4
        parts.append(
            f'<line x1="{_num(px(0))}" y1="{_num(py(y))}" x2="{_num(px(1))}" y2="{_num(py(y))}" '
            f'stroke="#e3e3e3"/><text x="{_num(px(0) - 6)}" y="{_num(py(y) + 4)}" '
            f'text-anchor="end">{k * 25}%</text>'
        )
    for k in range(11):
        x = k / 10
        parts.append(
            f'<text x="{_num(px(x))}" y="{_num(py(0) + 16)}" text-anchor="middle">{x:.1f}</text>'
        )
    parts.append(
        f'<line x1="{_num(px(0))}" y1="{_num(py(0))}" x2="{_num(px(1))}" y2="{_num(py(0))}" '
        f'stroke="#999"/><text x="{_num(px(0.5))}" y="{_num(height - 6)}" '
        f'text-anchor="middle">{esc(x_label)}</text>'
    )
    return "".join(parts)


def _marker(x: float, y_top: float, y_bottom: float, label: str) -> str:
    return (
        f'<line x1="{_num(x)}" y1="{_num(y_top)}" x2="{_num(x)}" y2="{_num(y_bottom)}" '
        f'stroke="#555" stroke-dasharray="3 3"><title>{esc(label)}</title></line>'
        f'<text x="{_num(x + 4)}" y="{_num(y_top + 12)}">{esc(label)}</text>'
    )


def _series(
    s: Series,
    colour: str,
    dash: str,
    px: Callable[[float], float],
    py: Callable[[float], float],
) -> str:
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    parts = [f"<g><title>{esc(s.name)}</title>"]
    for run in _segments(s.points):
        coords = " ".join(f"{_num(px(x))},{_num(py(y))}" for x, y in run)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"'
            f"{dash_attr}/>"
        )
        for x, y in run:
            parts.append(
                f'<circle cx="{_num(px(x))}" cy="{_num(py(y))}" r="3" fill="{colour}">'
                f"<title>{esc(s.name)} at {x:.2f}: {y:.1%}</title></circle>"
            )
    parts.append("</g>")
    return "".join(parts)


def _legend_entry(name: str, colour: str, dash: str, x: float, y: float) -> str:
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line x1="{_num(x)}" y1="{_num(y)}" x2="{_num(x + 22)}" y2="{_num(y)}" '
        f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
        f'<text x="{_num(x + 28)}" y="{_num(y + 4)}">{esc(name)}</text>'
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], text_columns: int = 1) -> str:
    """A plain table; the first `text_columns` columns are left-aligned text."""

    def cell(tag: str, i: int, value: object) -> str:
        cls = ' class="text"' if i < text_columns else ""
        return f"<{tag}{cls}>{esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    # A wide table scrolls inside its box on a phone instead of widening the page.
    inner = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="wide">{inner}</div>'


def cards(items: Sequence[tuple[str, str]]) -> str:
    """Headline figures: (value, caption) pairs."""
    inner = "".join(
        f'<div class="card"><b>{esc(v)}</b><span>{esc(c)}</span></div>' for v, c in items
    )
    return f'<div class="cards">{inner}</div>'


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )
