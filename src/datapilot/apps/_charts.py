"""Charts that follow the result's shape, as Vega-Lite JSON (the UI renders it offline) and as PNG/SVG.

Shape rules, first match wins: one row of one value -> a single number; a date-like column and a
measure -> line; a category and a measure whose values are all positive parts of a whole with few
categories (or the model asked for ``pie``) -> pie; a category and measures -> bar; two measures ->
scatter; anything else -> table. A model's chart wish is honoured only when the shape allows it.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from datapilot.core.errors import MissingDependencyError
from datapilot.datasource import QueryResult, jsonable

CHART_KINDS = ("number", "line", "bar", "pie", "scatter", "table")
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?([ T]\d{2}:\d{2}(:\d{2})?)?$")
_TIME_NAMES = re.compile(r"(date|time|day|month|year|week|quarter|period|日期|时间|月|年)", re.I)
_SHARE_WORDS = re.compile(r"(share|percent|proportion|ratio|breakdown|distribution|占比|比例|份额|分布)", re.I)
PIE_MAX_SLICES = 8


@dataclass(slots=True)
class ChartSpec:
    kind: str
    title: str = ""
    x: str | None = None
    y: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "x": self.x, "y": self.y}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_date(v: Any, name: str) -> bool:
    if isinstance(v, dt.date | dt.datetime):
        return True
    if isinstance(v, str) and _DATE.match(v.strip()):
        return True
    # "01".."12" month numbers and years named as such
    return isinstance(v, str | int) and bool(_TIME_NAMES.search(name)) and str(v).strip().isdigit()


def _column_kinds(result: QueryResult) -> list[str]:
    kinds = []
    for i, name in enumerate(result.columns):
        values = [r[i] for r in result.rows if r[i] is not None]
        if values and all(_is_date(v, name) for v in values):
            kinds.append("time")
        elif values and all(_is_number(jsonable(v)) for v in values):
            kinds.append("measure")
        else:
            kinds.append("category")
    return kinds


def choose_chart(result: QueryResult, wish: str | None = None, question: str = "") -> ChartSpec:
    """The chart for a result, from its shape; ``wish`` (a model's chart type) wins when it fits."""
    cols, rows = result.columns, result.rows
    title = question.strip()
    if not rows or not cols:
        return ChartSpec("table", title)
    kinds = _column_kinds(result)
    measures = [c for c, k in zip(cols, kinds, strict=True) if k == "measure"]
    times = [c for c, k in zip(cols, kinds, strict=True) if k == "time"]
    cats = [c for c, k in zip(cols, kinds, strict=True) if k == "category"]
    if len(rows) == 1 and len(cols) == 1:
        return ChartSpec("number", title, None, list(cols))
    wish = (wish or "").strip().lower() or None
    if times and measures and len(rows) > 1:
        spec = ChartSpec("line", title, times[0], measures)
        if wish == "bar":
            spec.kind = "bar"
        return spec
    if len(measures) >= 1 and (cats or (times and len(rows) == 1)) and len(rows) > 1:
        x = (cats or times)[0]
        y = measures
        positive = all((jsonable(r[cols.index(y[0])]) or 0) >= 0 for r in rows)
        pie_ok = len(y) == 1 and positive and len(rows) <= PIE_MAX_SLICES
        if pie_ok and (wish == "pie" or (wish is None and _SHARE_WORDS.search(question or ""))):
            return ChartSpec("pie", title, x, y)
        if wish == "line":
            return ChartSpec("line", title, x, y)
        return ChartSpec("bar", title, x, y)
    if len(measures) >= 2 and len(rows) > 1 and not cats:
        return ChartSpec("scatter", title, measures[0], measures[1:2])
    if len(measures) >= 2 and len(rows) > 1 and wish == "scatter":
        return ChartSpec("scatter", title, measures[0], measures[1:2])
    return ChartSpec("table", title)


def vega_lite(spec: ChartSpec, result: QueryResult) -> dict[str, Any]:
    """A self-contained Vega-Lite v5 spec (data inline), or a plain table description for tables."""
    values = result.records()
    base: dict[str, Any] = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": spec.title,
        "data": {"values": values},
    }
    if spec.kind == "table":
        return {"kind": "table", "title": spec.title, "columns": result.columns, "values": values}
    if spec.kind == "number":
        return {"kind": "number", "title": spec.title, "label": spec.y[0], "value": values[0][spec.y[0]]}
    y = spec.y[0]
    if spec.kind == "pie":
        base["mark"] = {"type": "arc", "tooltip": True}
        base["encoding"] = {
            "theta": {"field": y, "type": "quantitative"},
            "color": {"field": spec.x, "type": "nominal"},
        }
        return base
    if spec.kind == "scatter":
        base["mark"] = {"type": "point", "tooltip": True}
        base["encoding"] = {
            "x": {"field": spec.x, "type": "quantitative"},
            "y": {"field": y, "type": "quantitative"},
        }
        return base
    x_type = "temporal" if spec.kind == "line" and _all_dates(values, spec.x) else "ordinal"
    if spec.kind == "bar":
        x_type = "nominal"
    if len(spec.y) > 1:  # several measures: fold them into one colour-coded series each
        base["transform"] = [{"fold": spec.y, "as": ["measure", "value"]}]
        y, color = "value", {"field": "measure", "type": "nominal"}
    else:
        color = None
    base["mark"] = {"type": "line" if spec.kind == "line" else "bar", "tooltip": True, "point": spec.kind == "line"}
    base["encoding"] = {
        "x": {"field": spec.x, "type": x_type, "sort": None},
        "y": {"field": y, "type": "quantitative"},
    }
    if color:
        base["encoding"]["color"] = color
    if spec.kind == "bar" and len(spec.y) == 1:
        base["mark"].pop("point")
    return base


def _all_dates(values: list[dict[str, Any]], column: str | None) -> bool:
    return column is not None and all(
        isinstance(v.get(column), str) and bool(_DATE.match(v[column])) for v in values if v.get(column) is not None
    )


def render_chart(spec: ChartSpec, result: QueryResult, fmt: str = "png") -> bytes:
    """The chart as PNG or SVG bytes, drawn with matplotlib (headless)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", "all") from None
    with warnings.catch_warnings():
        # A title in a script the installed fonts lack (Chinese without a CJK font) draws as boxes;
        # matplotlib warns per glyph, which is noise for a chart.
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph .* missing from font.*")
        from matplotlib import font_manager

        installed = {f.name for f in font_manager.fontManager.ttflist}
        fonts = [f for f in _CJK_FONTS if f in installed] + ["DejaVu Sans"]
        with matplotlib.rc_context({"font.sans-serif": fonts, "font.family": "sans-serif"}):
            return _draw(plt, spec, result, fmt)


_CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei", "PingFang SC"]


def _draw(plt: Any, spec: ChartSpec, result: QueryResult, fmt: str) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        records = result.records()
        if spec.kind in ("table", "number"):
            ax.axis("off")
            if spec.kind == "number":
                ax.text(0.5, 0.5, f"{records[0][spec.y[0]]}", ha="center", va="center", fontsize=32)
                ax.text(0.5, 0.2, spec.y[0], ha="center", va="center", fontsize=12)
            else:
                shown = records[:20]
                cells = [[str(r[c]) for c in result.columns] for r in shown] or [["" for _ in result.columns]]
                table = ax.table(cellText=cells, colLabels=result.columns, loc="center")
                table.auto_set_font_size(False)
                table.set_fontsize(8)
        else:
            xs = [str(r[spec.x]) if spec.x else "" for r in records]
            if spec.kind == "pie":
                ax.pie([float(r[spec.y[0]] or 0) for r in records], labels=xs, autopct="%1.0f%%")
                ax.axis("equal")
            elif spec.kind == "scatter":
                ax.scatter([float(r[str(spec.x)] or 0) for r in records], [float(r[spec.y[0]] or 0) for r in records])
                ax.set_xlabel(str(spec.x))
                ax.set_ylabel(spec.y[0])
            else:
                width = 0.8 / len(spec.y)
                for i, y in enumerate(spec.y):
                    ys = [float(r[y] or 0) for r in records]
                    if spec.kind == "line":
                        ax.plot(xs, ys, marker="o", label=y)
                    else:
                        positions = [j + i * width - 0.4 + width / 2 for j in range(len(xs))]
                        ax.bar(positions, ys, width=width, label=y)
                if spec.kind == "bar":
                    ax.set_xticks(range(len(xs)), xs)
                ax.tick_params(axis="x", labelrotation=45 if len(xs) > 6 else 0)
                ax.set_xlabel(str(spec.x))
                if len(spec.y) > 1:
                    ax.legend()
                else:
                    ax.set_ylabel(spec.y[0])
        if spec.title:
            ax.set_title(spec.title[:80])
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt)
        return buf.getvalue()
    finally:
        plt.close(fig)
