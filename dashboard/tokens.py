"""The explorer's token view: one example's response as a single HTML string, each token shaded by a value.

Two shadings: the token's NLL at one checkpoint (white for 0, red for high), and its change between the first and
the last checkpoint, last minus first (blue: the NLL fell, the reference learned the token; red: it rose). Hovering
a token shows its text and values (its ``title``). The whole response is one string (one ``st.html`` element), so a
2,000-token response renders at once.

Every token's text is escaped with :func:`html.escape` before it enters the HTML, so an example holding
``<script>`` shows it as text; whitespace is kept (``white-space: pre-wrap``, in a monospace font, so indentation
and spaces read as in the data) and a newline is marked with a faint ``↵`` before the line break, so newline tokens
can be seen and hovered.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence

import numpy as np

from dashboard.queries import token_key

HIGH = (214, 96, 77)  # high NLL, or an NLL that rose (#d6604d)
LEARNED = (67, 147, 195)  # an NLL that fell (#4393c3)
LEVELS = 100  # colour steps on each side of the scale
NEWLINE_MARK = '<span class="nl">\u21b5</span>'
CLASS = "sftmix-tokens"
STYLE = (
    "<style>"
    f".{CLASS}{{white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.8;background:#fff;color:#1f1f1f;"
    "padding:.75rem 1rem;border:1px solid rgba(49,51,63,.2);border-radius:.5rem;max-height:30rem;overflow-y:auto;"
    'font-family:"Source Code Pro",ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9rem}'
    f".{CLASS} span[title]{{border-radius:2px;box-shadow:inset -1px 0 0 rgba(49,51,63,.15);cursor:default}}"
    f".{CLASS} span[title]:hover{{outline:2px solid #31333f}}"
    f".{CLASS} .nl{{opacity:.35}}"
    f".{CLASS} .hit{{outline:2px dashed #31333f;outline-offset:1px}}"
    ".sftmix-legend{display:flex;align-items:center;gap:.5rem;font-size:.85rem;color:inherit;margin:.25rem 0 .5rem}"
    ".sftmix-legend .bar{display:inline-block;width:10rem;height:.8rem;border:1px solid rgba(49,51,63,.3);"
    "border-radius:2px}"
    "</style>"
)


def _lut(rgb: tuple[int, int, int]) -> list[str]:
    """LEVELS + 1 colours from white (0) to ``rgb`` (LEVELS), as hex strings."""
    t = np.linspace(0.0, 1.0, LEVELS + 1)[:, None]
    mixed = np.rint(255 + (np.asarray(rgb, dtype=float) - 255) * t).astype(int)
    return ["#{:02x}{:02x}{:02x}".format(*c) for c in mixed]


_HIGH_LUT, _LEARNED_LUT = _lut(HIGH), _lut(LEARNED)


def robust_max(values: Sequence[float] | np.ndarray, q: float = 0.99) -> float:
    """The ``q`` quantile of ``|values|`` (so one outlier does not wash out the rest), at least 1e-6."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    v = v[np.isfinite(v)]
    return max(float(np.quantile(v, q)) if v.size else 0.0, 1e-6)


def _levels(values: np.ndarray, vmax: float) -> np.ndarray:
    return np.rint(np.clip(np.nan_to_num(np.abs(values) / vmax), 0.0, 1.0) * LEVELS).astype(int)


def nll_colors(nll: np.ndarray, vmax: float) -> list[str]:
    """White (NLL 0) to red (NLL >= ``vmax``), one hex colour per token."""
    return [_HIGH_LUT[k] for k in _levels(nll, vmax)]


def change_colors(delta: np.ndarray, vmax: float) -> list[str]:
    """Blue (fell by >= ``vmax``) through white (no change) to red (rose by >= ``vmax``), one per token."""
    return [(_LEARNED_LUT if d < 0 else _HIGH_LUT)[k] for d, k in zip(delta.tolist(), _levels(delta, vmax))]


def _text(token: str) -> str:
    return html.escape(token).replace("\n", NEWLINE_MARK + "\n")


def _shown(token: str) -> str:
    """A token for a tooltip: quoted, with its whitespace and escapes visible (JSON string syntax)."""
    return json.dumps(token, ensure_ascii=False)


def spans(tokens: Sequence[str], colors: Sequence[str], titles: Sequence[str], mark: str = "") -> str:
    """The tokens as one ``div`` of ``span``s (escaped text, background colour, escaped ``title``). Tokens whose
    :func:`dashboard.queries.token_key` is ``mark`` get the ``hit`` class (outlined)."""
    parts = [f'<div class="{CLASS}">']
    for tok, color, title in zip(tokens, colors, titles):
        hit = ' class="hit"' if mark and token_key(tok) == mark else ""
        parts.append(f'<span{hit} style="background:{color}" title="{html.escape(title)}">{_text(tok)}</span>')
    parts.append("</div>")
    return "".join(parts)


def _legend(label: str, gradient: str, lo: str, hi: str) -> str:
    return (
        f'<div class="sftmix-legend"><span>{html.escape(label)}</span><span>{html.escape(lo)}</span>'
        f'<span class="bar" style="background:linear-gradient(90deg,{gradient})"></span><span>{html.escape(hi)}</span>'
        "<span>· hover a token for its text and values</span></div>"
    )


def _check(tokens: Sequence[str], *values: Sequence[float]) -> None:
    for v in values:
        if len(v) != len(tokens):
            raise ValueError(f"{len(tokens)} tokens but {len(v)} values: token texts and NLLs must align")


def nll_html(tokens: Sequence[str], nll: Sequence[float], *, vmax: float | None = None, mark: str = "") -> str:
    """The response shaded by each token's NLL: white at 0, red at ``vmax`` (default :func:`robust_max`) and above.

    Each token's ``title`` reads ``"<token>" · NLL 1.234 · p 0.291`` (p: the probability the model gave it).
    """
    _check(tokens, nll)
    values = np.asarray(nll, dtype=np.float64)
    vmax = robust_max(values) if vmax is None else vmax
    titles = [f"{_shown(t)} · NLL {v:.3f} · p {math.exp(-v):.3g}" for t, v in zip(tokens, values.tolist())]
    legend = _legend("NLL (nats)", f"{_HIGH_LUT[0]},{_HIGH_LUT[-1]}", "0", f"≥ {vmax:.3g}")
    return STYLE + legend + spans(tokens, nll_colors(values, vmax), titles, mark)


def token_change(first: Sequence[float], last: Sequence[float]) -> np.ndarray:
    """Each token's NLL change, last minus first (negative: the reference learned it)."""
    return np.asarray(last, dtype=np.float64) - np.asarray(first, dtype=np.float64)


def change_html(
    tokens: Sequence[str],
    first: Sequence[float],
    last: Sequence[float],
    *,
    vmax: float | None = None,
    mark: str = "",
) -> str:
    """The response shaded by each token's NLL change from the first to the last checkpoint (last minus first):
    blue where it fell (learned), red where it rose, white where it stayed; saturated at ``vmax`` (default
    :func:`robust_max` of the changes).

    Each token's ``title`` reads ``"<token>" · Δ NLL -1.234 (3.456 → 2.222)``.
    """
    _check(tokens, first, last)
    delta = token_change(first, last)
    vmax = robust_max(delta) if vmax is None else vmax
    titles = [
        f"{_shown(t)} · Δ NLL {d:+.3f} ({a:.3f} → {b:.3f})"
        for t, d, a, b in zip(tokens, delta.tolist(), np.asarray(first).tolist(), np.asarray(last).tolist())
    ]
    legend = _legend(
        "NLL change, last − first",
        f"{_LEARNED_LUT[-1]},#ffffff,{_HIGH_LUT[-1]}",
        f"fell (learned) −{vmax:.3g}",
        f"+{vmax:.3g} rose",
    )
    return STYLE + legend + spans(tokens, change_colors(delta, vmax), titles, mark)
