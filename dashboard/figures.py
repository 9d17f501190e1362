"""Plotly figures for the dashboard: pure functions from (already aggregated or sampled) frames to figures.

Scatters use WebGL (``Scattergl``) so tens of thousands of points stay interactive. A map draws every example as a
density layer (a heatmap of the counts per cell that DuckDB aggregated, :func:`density_layer`) under a sample of
points, which carry the hover and the click.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
import polars as pl

from profiler.table.schema import AMBIGUOUS, EASY, HARD

SPLIT_COLORS = {"confident": "#1f77b4", "unconfident": "#d62728", "unscored": "#9e9e9e"}
REGION_COLORS = {EASY: "#2ca02c", AMBIGUOUS: "#ff7f0e", HARD: "#9467bd"}
CATEGORY_COLORS = {"split": SPLIT_COLORS, "region": REGION_COLORS}


def source_colors(sources: list[str]) -> dict[str, str]:
    """A colour per source, in the order given: plotly's Dark2 (eight colours that read on white), or its 26-colour
    Alphabet set for more sources (repeating after 26)."""
    palette = pc.qualitative.Dark2 if len(sources) <= len(pc.qualitative.Dark2) else pc.qualitative.Alphabet
    return {s: palette[i % len(palette)] for i, s in enumerate(sources)}


LOG_PPL_TITLE = "log10 mean perplexity over checkpoints (confidence = minus mean perplexity)"
REL_VAR_TITLE = "relative variability (std / mean of perplexity over checkpoints)"


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        margin=dict(l=10, r=10, t=80, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),  # clear of the mode bar
    )
    return fig


def ppl_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Tick positions (log10 perplexity) and labels (the perplexity) at 1, 2, 5 x 10^k within [lo, hi]."""
    vals, text = [], []
    for k in range(math.floor(lo) - 1, math.ceil(hi) + 1):
        for m in (1, 2, 5):
            v = math.log10(m) + k
            if lo <= v <= hi:
                vals.append(v)
                ppl = m * 10.0**k
                text.append(f"{ppl:,.0f}" if ppl >= 1 else f"{ppl:g}")
    return vals, text


def _tick_args(lo: float, hi: float) -> dict:
    """Perplexity labels on a log10-perplexity axis, where at least two fit (else plotly's own log10 ticks)."""
    vals, text = ppl_ticks(lo, hi)
    return dict(tickvals=vals, ticktext=text) if len(vals) >= 2 else {}


def _padded(lo: float, hi: float, pad: float = 0.03) -> list[float]:
    span = hi - lo if hi > lo else max(abs(lo), 1.0)
    return [lo - pad * span, hi + pad * span]


def confidence_histogram(hist: pl.DataFrame, median: float | None, bin_edges: list[float] = ()) -> go.Figure:
    """Stacked bars of the binned counts per split on the log10 mean perplexity scale, with the median split (the
    split point, dashed) and the edges of the quantile bins (dotted).

    Args:
        hist: :func:`dashboard.queries.confidence_histogram` (bin edges in log10 perplexity).
        median: the median split, in log10 perplexity (``queries.scale_marks``).
        bin_edges: the edges between quantile bins, in log10 perplexity.
    """
    fig = go.Figure()
    for split in ("confident", "unconfident"):
        part = hist.filter(pl.col("split") == split)
        if part.is_empty():
            continue
        centers = ((part["lo"] + part["hi"]) / 2).to_list()
        ranges = [f"{10**a:,.4g}-{10**b:,.4g}" for a, b in zip(part["lo"].to_list(), part["hi"].to_list())]
        fig.add_trace(
            go.Bar(
                x=centers,
                y=part["count"].to_list(),
                width=(part["hi"] - part["lo"]).to_list(),
                name=split,
                marker_color=SPLIT_COLORS[split],
                customdata=ranges,
                hovertemplate="mean perplexity %{customdata}<br>%{y} examples<extra>" + split + "</extra>",
            )
        )
    fig.update_layout(barmode="stack", bargap=0)
    for edge in bin_edges:
        fig.add_vline(x=edge, line_dash="dot", line_width=1, line_color="#7f7f7f")
    if median is not None:
        fig.add_vline(
            x=median, line_dash="dash", line_color="black", annotation_text=f"median split: perplexity {10**median:.4g}"
        )
    if not hist.is_empty():
        lo, hi = float(hist["lo"].min()), float(hist["hi"].max())
        fig.update_xaxes(range=[lo, hi], **_tick_args(lo, hi))
    return _layout(
        fig,
        "Mean perplexity over checkpoints, log scale (left of the median: confident; dotted: quantile bins)",
        LOG_PPL_TITLE + "; ticks show the perplexity",
        "examples",
    )


def source_bars(breakdown: pl.DataFrame) -> go.Figure:
    fig = go.Figure()
    for split in ("confident", "unconfident"):
        fig.add_trace(
            go.Bar(
                x=breakdown["source"].to_list(),
                y=breakdown[split].to_list(),
                name=split,
                marker_color=SPLIT_COLORS[split],
            )
        )
    fig.update_layout(barmode="stack")
    return _layout(fig, "Split by source", "source", "examples")


def scatter(
    points: pl.DataFrame,
    *,
    x: str,
    y: str,
    color: str = "split",
    title: str = "",
    x_title: str | None = None,
    y_title: str | None = None,
) -> go.Figure:
    """A WebGL scatter colored by split, region or source (one trace each) or by a numeric column (a colorscale).

    Hover shows the example id, source, mean perplexity, region and the start of the instruction. Each point's
    ``customdata[0]`` is its example id, so a selection maps back to examples.
    """
    fig = go.Figure()
    hover = (
        "<b>%{customdata[0]}</b> (%{customdata[1]})<br>mean perplexity %{customdata[2]:.4g} · %{customdata[4]}"
        "%{customdata[5]}<br>%{customdata[3]}<extra></extra>"
    )

    def custom(frame: pl.DataFrame):
        prompts = [_wrap(p) for p in frame["prompt"].to_list()]
        regions = frame["region"].to_list() if "region" in frame.columns else [""] * frame.height
        ifds = frame["ifd"].to_list() if "ifd" in frame.columns else [None] * frame.height
        rows = zip(
            frame["example_id"].to_list(),
            frame["source"].to_list(),
            [None if c is None else -c for c in frame["confidence"].to_list()],
            prompts,
            [r or "" for r in regions],
            ["" if v is None else f" · IFD {v:.3g}" for v in ifds],
        )
        # An array, not a list of tuples: plotly checks a list element by element (a second for 5,000 points).
        out = np.empty((frame.height, 6), dtype=object)
        out[:] = list(rows) if frame.height else np.empty((0, 6), dtype=object)
        return out

    def markers(frame: pl.DataFrame, name: str, **marker) -> None:
        """One trace of ``frame``'s points with this hover."""
        fig.add_trace(
            go.Scattergl(
                x=frame[x].to_numpy(),
                y=frame[y].to_numpy(),
                mode="markers",
                name=name,
                marker=marker,
                customdata=custom(frame),
                hovertemplate=hover,
            )
        )

    if color in CATEGORY_COLORS or color == "source":
        palette = CATEGORY_COLORS.get(color) or source_colors(sorted(set(points["source"].drop_nulls().to_list())))
        for name, c in palette.items():
            part = points.filter(pl.col(color) == name)
            if part.is_empty():
                continue
            markers(part, name, color=c, size=5, opacity=0.7)
    elif color == "ifd":
        _ifd_traces(points, markers)
    else:
        values = points[color]
        title_ = color
        if color == "confidence" and "log_ppl" in points.columns:  # the readable scale; low perplexity = blue
            values, title_ = points["log_ppl"], "log10 mean ppl"
        markers(
            points,
            color,
            color=values.to_list(),
            colorscale="RdBu_r" if title_ != color else "RdBu",
            size=5,
            opacity=0.8,
            colorbar=dict(title=title_),
        )
    fig.update_layout(dragmode="lasso", height=600)
    return _layout(fig, title, x if x_title is None else x_title, y if y_title is None else y_title)


def projection_name(projection: dict | None) -> str:
    """The name of the semantic map's projection, from the table's ``projection`` meta (``{"method": "umap",
    ...}``): "UMAP" or "PCA"; "UMAP" where the meta does not say."""
    return str((projection or {}).get("method") or "umap").upper()


def semantic_map(
    points: pl.DataFrame,
    *,
    color: str = "split",
    projection: dict | None = None,
    density: go.Heatmap | None = None,
) -> go.Figure:
    """The 2-D projection of the examples' embeddings (:func:`scatter` of ``umap_x``, ``umap_y``), its axes named
    after the projection stored in the table's meta ("UMAP 1", "UMAP 2"; "PCA 1", "PCA 2"), over the density layer
    of every example where given (:func:`density_layer`)."""
    method = projection_name(projection)
    fig = scatter(
        points,
        x="umap_x",
        y="umap_y",
        color=color,
        title=f"{method} map of the examples' embeddings",
        x_title=f"{method} 1",
        y_title=f"{method} 2",
    )
    return with_density(fig, density)


IFD_COLORSCALE = "Viridis"


def ifd_color_axis(values: list[float]) -> dict:
    """A colour axis for IFD on the log10 scale, from the 5th percentile of the examples up to IFD 1 (or the 98th
    percentile, if higher): IFD is heavy-tailed, often over orders of magnitude below 1, so a few outliers would
    otherwise wash out the rest. The top colour marks IFD 1 and above (the prompt does not help predict the
    response). Ticks show the IFD."""
    logs = sorted(math.log10(v) for v in values if v is not None and v > 0)
    if not logs:
        return dict(cmin=-1.0, cmax=0.0, colorscale=IFD_COLORSCALE)
    hi = max(logs[int(math.ceil(0.98 * (len(logs) - 1)))], 0.0)
    lo = min(logs[int(0.05 * (len(logs) - 1))], hi - 0.3)
    ticks = list(range(math.ceil(lo), math.floor(hi) + 1))
    if len(ticks) < 3:  # less than two decades: 1, 2, 5 steps
        steps = (math.log10(m) + k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5))
        ticks = [t for t in steps if lo <= t <= hi]
    return dict(
        cmin=lo,
        cmax=hi,
        colorscale=IFD_COLORSCALE,
        colorbar=dict(title="IFD", tickvals=ticks, ticktext=[f"{10**t:.3g}" for t in ticks]),
    )


def _ifd_traces(points: pl.DataFrame, markers) -> None:
    """Points colored by IFD on a log colour axis (:func:`ifd_color_axis`); those without an IFD in grey, as their
    own trace. ``markers(frame, name, **marker)`` adds one trace."""
    has = points.filter(pl.col("ifd").is_not_null() & (pl.col("ifd") > 0))
    rest = points.filter(pl.col("ifd").is_null() | (pl.col("ifd") <= 0))
    if not has.is_empty():
        ifd = has["ifd"].to_list()
        markers(has, "IFD", color=[math.log10(v) for v in ifd], size=5, opacity=0.85, **ifd_color_axis(ifd))
    if not rest.is_empty():
        markers(rest, "no IFD", color="#9e9e9e", size=5, opacity=0.6)


DENSITY_COLORS = ("count", "as the points")  # what a map's density cells are coloured by
_SPLIT_SCALE = [[0.0, SPLIT_COLORS["unconfident"]], [0.5, "#f2f2f2"], [1.0, SPLIT_COLORS["confident"]]]
_COUNT_SCALE = [[0.0, "#e8e8e8"], [1.0, "#303030"]]


def _discrete_scale(colors: list[str]) -> list[list]:
    """A colour scale that gives the integer ``i`` (of ``len(colors)``, zmin 0, zmax ``len - 1``) colour ``i``."""
    n = len(colors)
    if n == 1:
        return [[0.0, colors[0]], [1.0, colors[0]]]
    scale = []
    for i, c in enumerate(colors):
        scale += [[max(0.0, (i - 0.5) / (n - 1)), c], [min(1.0, (i + 0.5) / (n - 1)), c]]
    return scale


def density_layer(
    cells: pl.DataFrame,
    extent: tuple[float, float, float, float],
    cells_per_axis: int,
    *,
    color: str = "count",
    sources: list[str] | None = None,
    opacity: float = 0.75,
) -> go.Heatmap:
    """Every example of a map as a heatmap of its cells (:func:`dashboard.queries.density`): coloured by the
    examples per cell (``count``, log scale, grey), or by what the points are coloured by: the mean log10 mean
    perplexity (``confidence``), the share confident (``split``), the most frequent region or source, the mean log10
    IFD (``ifd``). The hover gives the cell's examples. Only the rows and columns of cells that hold examples are
    sent."""
    x0, x1, y0, y1 = extent
    w, h = (x1 - x0) / cells_per_axis or 1.0, (y1 - y0) / cells_per_axis or 1.0
    if cells.is_empty():
        return go.Heatmap(z=[[None]], x=[x0], y=[y0], showscale=False, name="density", hoverinfo="skip")
    ix, iy = cells["ix"].to_numpy(), cells["iy"].to_numpy()
    lo_x, lo_y = int(ix.min()), int(iy.min())
    shape = (int(iy.max()) - lo_y + 1, int(ix.max()) - lo_x + 1)
    counts = cells["count"].to_numpy()

    def grid(values, fill=np.nan):
        z = np.full(shape, fill, dtype=object if fill is None else float)
        z[iy - lo_y, ix - lo_x] = values
        return z

    args: dict = {}
    label = ""
    if color == "confidence":
        z, label = grid(cells["mean_log_ppl"].to_numpy()), "mean log10 perplexity %{z:.2f}"
        args = dict(colorscale="RdBu_r", colorbar=dict(title="log10 mean ppl", x=1.08))
    elif color == "split":
        z, label = grid(cells["share_confident"].to_numpy()), "%{z:.0%} confident"
        args = dict(colorscale=_SPLIT_SCALE, zmin=0.0, zmax=1.0, colorbar=dict(title="share confident", x=1.08))
    elif color == "region":
        regions = list(REGION_COLORS)
        which = np.argmax(cells.select("easy", "ambiguous", "hard").to_numpy(), axis=1).astype(float)
        z = grid(which)
        label = "mostly %{text}"
        args = dict(colorscale=_discrete_scale(list(REGION_COLORS.values())), zmin=0, zmax=2, showscale=False)
        args["text"] = grid(np.array(regions, dtype=object)[which.astype(int)], fill=None)
    elif color == "source":
        names = sources or sorted(set(cells["source"].drop_nulls().to_list()))
        palette = source_colors(names)
        index = {n: i for i, n in enumerate(names)}
        z = grid(np.array([index.get(v, 0) for v in cells["source"].to_list()], dtype=float))
        label = "mostly %{text}"
        args = dict(colorscale=_discrete_scale(list(palette.values())), zmin=0, zmax=max(len(names) - 1, 1))
        args.update(showscale=False, text=grid(np.array(cells["source"].to_list(), dtype=object), fill=None))
    elif color == "ifd":
        logs = cells["mean_log_ifd"].to_numpy().astype(float)
        z, label = grid(logs), "mean log10 IFD %{z:.2f}"
        axis = ifd_color_axis([10**v for v in logs if not math.isnan(v)])
        args = dict(colorscale=axis["colorscale"], zmin=axis["cmin"], zmax=axis["cmax"])
        if "colorbar" in axis:
            args["colorbar"] = dict(axis["colorbar"], x=1.08)
    else:  # count, on a log scale
        z = grid(np.log10(counts.astype(float)))
        top = max(float(np.log10(counts.max())), 1.0)
        ticks = list(range(0, math.floor(top) + 1))
        args = dict(
            colorscale=_COUNT_SCALE,
            zmin=0.0,
            zmax=top,
            colorbar=dict(title="examples per cell", tickvals=ticks, ticktext=[f"{10**t:,}" for t in ticks], x=1.08),
        )
    hover = "%{customdata:,.0f} examples" + (f" · {label}" if label else "") + "<extra>density</extra>"
    return go.Heatmap(
        z=z,
        x=x0 + (np.arange(lo_x, lo_x + shape[1]) + 0.5) * w,
        y=y0 + (np.arange(lo_y, lo_y + shape[0]) + 0.5) * h,
        customdata=grid(counts.astype(float)),
        hovertemplate=hover,
        name="density",
        opacity=opacity,
        hoverongaps=False,
        **args,
    )


def with_density(fig: go.Figure, layer: go.Heatmap | None) -> go.Figure:
    """``fig`` with the density layer under its points (the first trace)."""
    if layer is None:
        return fig
    fig.add_trace(layer)
    fig.data = (fig.data[-1], *fig.data[:-1])
    return fig


def shape_outline(fig: go.Figure, shape) -> go.Figure:
    """``fig`` with the outline of a selection drawn on it (a :class:`dashboard.queries.Shape` of that map)."""
    for kind, xs, ys in shape.parts:
        if kind == "box":
            xs, ys = (xs[0], xs[1], xs[1], xs[0]), (ys[0], ys[0], ys[1], ys[1])
        fig.add_trace(
            go.Scatter(
                x=[*xs, xs[0]],
                y=[*ys, ys[0]],
                mode="lines",
                line=dict(color="black", width=2, dash="dash"),
                name="selection",
                hoverinfo="skip",
            )
        )
    return fig


def data_map(
    points: pl.DataFrame,
    *,
    color: str = "region",
    median: float | None = None,
    ambiguous_from: float | None = None,
    density: go.Heatmap | None = None,
    extent: tuple[float, float, float, float] | None = None,
) -> go.Figure:
    """The cartography data map on readable scales: relative variability (x) against log10 mean perplexity (y,
    reversed so that confident examples are at the top), colored by region or split, with the median split (a
    horizontal line) and the start of the ambiguous region (a vertical line).

    Args:
        points: :func:`dashboard.queries.sample_points` (with ``log_ppl`` and ``rel_variability``).
        median, ambiguous_from: from :func:`dashboard.queries.scale_marks`.
        density: the layer of every example (:func:`density_layer`), drawn under the points.
        extent: the map's extent over the whole table (:func:`dashboard.queries.map_extent`).

    Each axis's range is set from the extent where given, else from the points (all of them), padded by 3%, so
    every point and cell shows.
    """
    fig = scatter(
        points,
        x="rel_variability",
        y="log_ppl",
        color=color,
        title="Data map: relative variability vs mean perplexity over checkpoints",
        x_title=REL_VAR_TITLE,
        y_title="log10 mean perplexity (up: more confident)",
    )
    with_density(fig, density)
    if points.is_empty() and extent is None:
        return fig
    if extent is None:
        extent = (
            float(points["rel_variability"].min()),
            float(points["rel_variability"].max()),
            float(points["log_ppl"].min()),
            float(points["log_ppl"].max()),
        )
    x_lo, x_hi = _padded(extent[0], extent[1])
    y_lo, y_hi = _padded(extent[2], extent[3])
    fig.update_xaxes(range=[x_lo, x_hi])
    fig.update_yaxes(range=[y_hi, y_lo], **_tick_args(y_lo, y_hi))  # reversed: low perplexity at the top
    if median is not None:
        fig.add_hline(
            y=median, line_dash="dash", line_color="black", annotation_text=f"median split: perplexity {10**median:.4g}"
        )
    if ambiguous_from is not None:
        fig.add_vline(x=ambiguous_from, line_dash="dot", line_color=REGION_COLORS["ambiguous"])
        fig.add_annotation(
            x=ambiguous_from, y=1, yref="paper", text="ambiguous →", showarrow=False, xanchor="left", yanchor="top"
        )
    return fig


def selected_ids(fig: go.Figure, points: list[dict]) -> list[str]:
    """Example ids of the points of a box/lasso selection on a :func:`scatter` figure."""
    ids = []
    for p in points:
        custom = p.get("customdata")
        if custom is None:  # look the point up in its trace
            trace = fig.data[p.get("curve_number", 0)]
            custom = trace.customdata[p.get("point_index", p.get("point_number", 0))]
        ids.append(str(custom[0]))
    return ids


def _escape(text: str) -> str:
    """Text for plotly, which reads a few HTML tags and entities in labels and hover text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _wrap(text: str, width: int = 60) -> str:
    """Hover text: HTML-escaped, broken into short lines."""
    text = _escape(text)
    return "<br>".join(text[i : i + width] for i in range(0, min(len(text), 3 * width), width))


def _lch_to_hex(lightness: float, chroma: float, hue: float) -> str | None:
    """The sRGB hex of a CIE LCh(ab) colour (D65), or None where it lies outside sRGB."""
    a, b = chroma * math.cos(math.radians(hue)), chroma * math.sin(math.radians(hue))
    fy = (lightness + 16) / 116
    xyz = [
        w * (f**3 if f**3 > 0.008856 else (f - 16 / 116) / 7.787)
        for w, f in zip((0.95047, 1.0, 1.08883), (fy + a / 500, fy, fy - b / 200))
    ]
    matrix = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))
    linear = [sum(m * v for m, v in zip(row, xyz)) for row in matrix]
    if not all(-1e-6 <= c <= 1 + 1e-6 for c in linear):
        return None
    srgb = [12.92 * c if c <= 0.0031308 else 1.055 * max(c, 0.0) ** (1 / 2.4) - 0.055 for c in linear]
    return "#" + "".join(f"{round(255 * min(max(c, 0.0), 1.0)):02x}" for c in srgb)


def ordered_colors(n: int) -> list[str]:
    """``n`` colours for ordered categories (confidence bins, least to most confident) that neighbours can tell
    apart: the hue runs from red to blue (the unconfident and confident colours) through orange, olive, green and
    teal, and the lightness alternates between dark and light (CIE L* 42 and 62), so neighbouring bins differ in
    both (about 25 to 35 CIE76 Delta E apart for 10 bins); chroma 55, lowered where sRGB has no such colour."""
    colors = []
    for i in range(n):
        hue = 30 + 235 * i / max(n - 1, 1)
        chroma = 55.0
        while (color := _lch_to_hex(42 if i % 2 == 0 else 62, chroma, hue)) is None:
            chroma -= 1.0
        colors.append(color)
    return colors


def decile_lines(deciles: pl.DataFrame) -> go.Figure:
    """Median perplexity per confidence bin across checkpoints (bin 0 = least confident), one well-separated colour
    per bin (:func:`ordered_colors`), listed from the least to the most confident."""
    fig = go.Figure()
    bins = sorted(set(deciles["quantile_bin"].to_list()))
    colors = ordered_colors(len(bins))
    by_fraction = _by_fraction(deciles)
    for i, b in enumerate(bins):
        part = deciles.filter(pl.col("quantile_bin") == b).sort("checkpoint_id")
        ends = {0: " · least confident", len(bins) - 1: " · most confident"} if len(bins) > 1 else {}
        fig.add_trace(
            go.Scatter(
                x=_checkpoint_x(part, by_fraction),
                y=part["median_ppl"].to_list(),
                mode="lines+markers",
                name=f"bin {b}{ends.get(i, '')}",
                line=dict(color=colors[i], width=2),
                customdata=list(
                    zip(
                        [_checkpoint_hover(r) for r in part.iter_rows(named=True)],
                        part["q25"].to_list(),
                        part["q75"].to_list(),
                        part["examples"].to_list(),
                    )
                ),
                hovertemplate="%{customdata[0]}: median %{y:.4g} (IQR %{customdata[1]:.4g}-%{customdata[2]:.4g}), "
                "%{customdata[3]} examples<extra>bin " + str(b) + "</extra>",
            )
        )
    fig.update_yaxes(type="log")
    title = "Median perplexity per confidence bin (0 = least confident)"
    fig = _layout(fig, title, _checkpoint_title(by_fraction), "perplexity")
    # A column at the right, from the least confident bin (top, as its line) to the most confident.
    fig.update_layout(
        legend=dict(
            title_text="confidence bin",
            orientation="v",
            x=1.02,
            xanchor="left",
            y=1,
            yanchor="top",
            traceorder="normal",
        )
    )
    return fig


def _by_fraction(frame: pl.DataFrame) -> bool:
    """Whether checkpoints go on the x axis by their fraction of the epoch (known for all of them in ``frame``)."""
    return frame["fraction"].null_count() == 0


def _checkpoint_x(part: pl.DataFrame, by_fraction: bool) -> list:
    """The x of each checkpoint: its fraction of the epoch, or its number (1-based, as the CLI counts checkpoints;
    the table's ``checkpoint_id`` is 0-based)."""
    return part["fraction"].to_list() if by_fraction else (part["checkpoint_id"] + 1).to_list()


def _checkpoint_title(by_fraction: bool) -> str:
    return "fraction of the epoch" if by_fraction else "checkpoint"


def _checkpoint_hover(row: dict) -> str:
    label = f"checkpoint {row['checkpoint_id'] + 1}"
    return label if row.get("step") is None else f"{label} (step {row['step']:,})"


def trajectory_lines(traj: pl.DataFrame) -> go.Figure:
    """Perplexity of individual examples across checkpoints, colored by split."""
    fig = go.Figure()
    shown = set()
    by_fraction = _by_fraction(traj)
    for (example_id,), part in traj.group_by(["example_id"], maintain_order=True):
        split = part["split"][0] or "unscored"
        fig.add_trace(
            go.Scatter(
                x=_checkpoint_x(part, by_fraction),
                y=part["perplexity"].to_list(),
                mode="lines+markers",
                name=split,
                legendgroup=split,
                showlegend=split not in shown,
                line=dict(color=SPLIT_COLORS.get(split, "#9e9e9e"), width=1),
                opacity=0.6,
                text=[_checkpoint_hover(r) for r in part.iter_rows(named=True)],
                hovertemplate=f"{example_id}<br>%{{text}}: perplexity %{{y:.4g}}<extra>{split}</extra>",
            )
        )
        shown.add(split)
    fig.update_yaxes(type="log")
    return _layout(fig, "Perplexity of individual examples", _checkpoint_title(by_fraction), "perplexity")


def agreement_heatmap(agreement: dict[str, dict[str, int]], a: str, b: str) -> go.Figure:
    rows = list(agreement)
    cols = list(next(iter(agreement.values())))
    z = [[agreement[r][c] for c in cols] for r in rows]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"B {c}" for c in cols],
            y=[f"A {r}" for r in rows],
            text=z,
            texttemplate="%{text}",
            colorscale="Blues",
            showscale=False,
        )
    )
    fig.update_layout(height=320)
    return _layout(fig, f"Split agreement (A = {a}, B = {b})", "", "")


def compare_scatter(
    joined: pl.DataFrame,
    a: str,
    b: str,
    density: go.Heatmap | None = None,
    extent: tuple[float, float, float, float] | None = None,
) -> go.Figure:
    """The mean perplexity of the common examples under each reference, on the log10 scale (as the data map: a few
    outliers would squeeze the rest into a corner), the examples whose split differs in orange; over the density
    of every common example where given (:func:`density_layer`)."""
    fig = go.Figure()
    agree = joined["split_a"] == joined["split_b"]
    for name, part, color in (
        ("same split", joined.filter(agree), "#7f7f7f"),
        ("flipped", joined.filter(~agree), "#ff7f0e"),
    ):
        if part.is_empty():
            continue
        fig.add_trace(
            go.Scattergl(
                x=(-part["confidence_a"]).log10().to_list(),
                y=(-part["confidence_b"]).log10().to_list(),
                mode="markers",
                name=name,
                marker=dict(color=color, size=5, opacity=0.7),
                customdata=list(
                    zip(
                        part["example_id"].to_list(),
                        [_wrap(p or "") for p in part["prompt"].to_list()],
                        (-part["confidence_a"]).to_list(),
                        (-part["confidence_b"]).to_list(),
                    )
                ),
                hovertemplate="<b>%{customdata[0]}</b><br>mean perplexity A %{customdata[2]:.4g} · B "
                "%{customdata[3]:.4g}<br>%{customdata[1]}<extra></extra>",
            )
        )
    with_density(fig, density)
    fig.update_layout(dragmode="lasso", height=550)  # as the maps: a drag selects
    if extent is not None:
        x_lo, x_hi = _padded(extent[0], extent[1])
        y_lo, y_hi = _padded(extent[2], extent[3])
        fig.update_xaxes(range=[x_lo, x_hi], **_tick_args(x_lo, x_hi))
        fig.update_yaxes(range=[y_lo, y_hi], **_tick_args(y_lo, y_hi))
    return _layout(
        fig,
        "Mean perplexity under each reference, log scale (ticks show the perplexity)",
        f"A: {a}, log10 mean perplexity",
        f"B: {b}, log10 mean perplexity",
    )


def hard_token_bars(tokens: pl.DataFrame) -> go.Figure:
    """Horizontal bars of the hardest tokens' mean NLL (the hardest at the top), hover: count and examples.

    Args:
        tokens: :func:`dashboard.queries.hard_tokens` rows, hardest first, ``token`` already made visible.
    """
    labels = [_escape(t) for t in tokens["token"].to_list()]  # plotly reads tags in text: "<b>" stays text
    fig = go.Figure(
        go.Bar(
            x=tokens["mean_nll"].to_list(),
            y=labels,
            orientation="h",
            marker_color="#d6604d",
            text=[f"{n:,}×" for n in tokens["count"].to_list()],
            textposition="outside",
            textangle=0,
            cliponaxis=False,
            textfont=dict(size=11, color="#555"),
            customdata=list(zip(tokens["count"].to_list(), tokens["examples"].to_list())),
            hovertemplate="<b>%{y}</b><br>mean NLL %{x:.3f}<br>%{customdata[0]:,} times in %{customdata[1]:,} "
            "examples<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    if not tokens.is_empty():
        fig.update_xaxes(range=[0, 1.08 * float(tokens["mean_nll"].max())])  # room for the counts
    fig.update_layout(height=max(260, 22 * tokens.height + 100), showlegend=False)
    return _layout(fig, "Hardest tokens: mean NLL at the last checkpoint with token scores", "mean NLL (nats)", "")
