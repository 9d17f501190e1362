"""Plotly figures for the dashboard: pure functions from (already aggregated or sampled) frames to figures.

Scatters use WebGL (``Scattergl``) so tens of thousands of points stay interactive.
"""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

SPLIT_COLORS = {"confident": "#1f77b4", "unconfident": "#d62728", "unscored": "#9e9e9e"}


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1),
    )
    return fig


def confidence_histogram(hist: pl.DataFrame, median: float | None) -> go.Figure:
    """Stacked bars of the binned counts per split, with the median (the split point) as a dashed line."""
    fig = go.Figure()
    for split in ("unconfident", "confident"):
        part = hist.filter(pl.col("split") == split)
        if part.is_empty():
            continue
        centers = ((part["lo"] + part["hi"]) / 2).to_list()
        fig.add_trace(
            go.Bar(
                x=centers,
                y=part["count"].to_list(),
                width=(part["hi"] - part["lo"]).to_list(),
                name=split,
                marker_color=SPLIT_COLORS[split],
                hovertemplate="confidence %{x:.4g}<br>%{y} examples<extra>" + split + "</extra>",
            )
        )
    fig.update_layout(barmode="stack", bargap=0)
    if median is not None:
        fig.add_vline(x=median, line_dash="dash", line_color="black", annotation_text=f"median {median:.4g}")
    return _layout(fig, "Confidence (minus mean perplexity over checkpoints)", "confidence", "examples")


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
    """A WebGL scatter colored by split (one trace each) or by a numeric column (a colorscale).

    Hover shows the example id, source, confidence and the start of the instruction. Each point's
    ``customdata[0]`` is its example id, so a selection maps back to examples.
    """
    fig = go.Figure()
    hover = (
        "<b>%{customdata[0]}</b> (%{customdata[1]})<br>confidence %{customdata[2]:.4g}<br>"
        "%{customdata[3]}<extra></extra>"
    )

    def custom(frame: pl.DataFrame):
        prompts = [_wrap(p) for p in frame["prompt"].to_list()]
        return list(
            zip(frame["example_id"].to_list(), frame["source"].to_list(), frame["confidence"].to_list(), prompts)
        )

    if color == "split":
        for split, c in SPLIT_COLORS.items():
            part = points.filter(pl.col("split") == split)
            if part.is_empty():
                continue
            fig.add_trace(
                go.Scattergl(
                    x=part[x].to_list(),
                    y=part[y].to_list(),
                    mode="markers",
                    name=split,
                    marker=dict(color=c, size=5, opacity=0.7),
                    customdata=custom(part),
                    hovertemplate=hover,
                )
            )
    else:
        fig.add_trace(
            go.Scattergl(
                x=points[x].to_list(),
                y=points[y].to_list(),
                mode="markers",
                name=color,
                marker=dict(
                    color=points[color].to_list(),
                    colorscale="RdBu",
                    size=5,
                    opacity=0.8,
                    colorbar=dict(title=color),
                ),
                customdata=custom(points),
                hovertemplate=hover,
            )
        )
    fig.update_layout(dragmode="lasso", height=600)
    return _layout(fig, title, x if x_title is None else x_title, y if y_title is None else y_title)


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


def _wrap(text: str, width: int = 60) -> str:
    """Hover text: HTML-escaped, broken into short lines."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "<br>".join(text[i : i + width] for i in range(0, min(len(text), 3 * width), width))


def decile_lines(deciles: pl.DataFrame) -> go.Figure:
    """Median perplexity per confidence bin across checkpoints (bin 0 = least confident), with quartile bands."""
    fig = go.Figure()
    bins = sorted(set(deciles["quantile_bin"].to_list()))
    for b in bins:
        part = deciles.filter(pl.col("quantile_bin") == b).sort("checkpoint_id")
        xs = _checkpoint_x(part)
        shade = b / max(len(bins) - 1, 1)
        color = f"rgb({int(214 * (1 - shade) + 31 * shade)},{int(39 * (1 - shade) + 119 * shade)},"
        color += f"{int(40 * (1 - shade) + 180 * shade)})"
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=part["median_ppl"].to_list(),
                mode="lines+markers",
                name=f"bin {b}",
                line=dict(color=color),
                customdata=list(zip(part["q25"].to_list(), part["q75"].to_list(), part["examples"].to_list())),
                hovertemplate="median %{y:.4g} (IQR %{customdata[0]:.4g}-%{customdata[1]:.4g}), "
                "%{customdata[2]} examples<extra>bin " + str(b) + "</extra>",
            )
        )
    fig.update_yaxes(type="log")
    return _layout(
        fig, "Median perplexity per confidence bin (0 = least confident)", "fraction of the epoch", "perplexity"
    )


def _checkpoint_x(part: pl.DataFrame) -> list:
    if part["fraction"].null_count() == 0:
        return part["fraction"].to_list()
    return part["checkpoint_id"].to_list()


def trajectory_lines(traj: pl.DataFrame) -> go.Figure:
    """Perplexity of individual examples across checkpoints, colored by split."""
    fig = go.Figure()
    shown = set()
    for (example_id,), part in traj.group_by(["example_id"], maintain_order=True):
        split = part["split"][0] or "unscored"
        fig.add_trace(
            go.Scatter(
                x=_checkpoint_x(part),
                y=part["perplexity"].to_list(),
                mode="lines+markers",
                name=split,
                legendgroup=split,
                showlegend=split not in shown,
                line=dict(color=SPLIT_COLORS.get(split, "#9e9e9e"), width=1),
                opacity=0.6,
                hovertemplate=f"{example_id}<br>perplexity %{{y:.4g}}<extra>{split}</extra>",
            )
        )
        shown.add(split)
    fig.update_yaxes(type="log")
    return _layout(fig, "Perplexity of individual examples", "fraction of the epoch", "perplexity")


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


def compare_scatter(joined: pl.DataFrame, a: str, b: str) -> go.Figure:
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
                x=part["confidence_a"].to_list(),
                y=part["confidence_b"].to_list(),
                mode="markers",
                name=name,
                marker=dict(color=color, size=5, opacity=0.7),
                customdata=list(zip(part["example_id"].to_list(), [_wrap(p or "") for p in part["prompt"].to_list()])),
                hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}<extra></extra>",
            )
        )
    fig.update_layout(height=550)
    return _layout(fig, "Confidence under each reference", f"A: {a}", f"B: {b}")
