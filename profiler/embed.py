"""The embedding projection: 2-D coordinates of the examples' embeddings for the dashboard's semantic map.

The embeddings themselves are written while scoring the last checkpoint (mean-pooled final hidden states, same
forward pass as the score); this stage only projects them. UMAP (``umap-learn``, seeded) when installed, else a
PCA fallback; very large sets fit UMAP on a seeded sample and transform the rest.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("auto", "umap", "pca", "none")


def _pca(x: np.ndarray, fit: np.ndarray) -> np.ndarray:
    mean = fit.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    comps = vt[:2]
    out = (x - mean) @ comps.T
    if out.shape[1] < 2:  # a single distinct direction (or one example): pad with zeros
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out


def _umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def project(
    vectors: np.ndarray, *, method: str = "auto", seed: int = 0, fit_sample: int = 50_000, n_neighbors: int = 15
) -> tuple[np.ndarray, dict[str, Any]]:
    """2-D coordinates of ``vectors`` (``[n, dim]``) and a description of how they were made.

    Args:
        method: ``umap``, ``pca``, or ``auto`` (UMAP when ``umap-learn`` is installed and there are enough points).
        fit_sample: fit on at most this many points (seeded sample) and transform the rest.
    """
    if method not in METHODS or method == "none":
        raise ValueError(f"projection method must be one of {METHODS[:3]}, got {method!r}")
    n = vectors.shape[0]
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, fit_sample, replace=False)) if n > fit_sample else np.arange(n)
    use_umap = method == "umap" or (method == "auto" and _umap_available())
    if method == "umap" and not _umap_available():
        raise ImportError("UMAP needs umap-learn: pip install 'sftmix[dashboard]'")
    if use_umap and n < 4:
        log.info("%d examples: too few for UMAP, using PCA", n)
        use_umap = False
    if method == "auto" and not use_umap and n >= 4:
        log.warning("umap-learn is not installed; the semantic map uses PCA (pip install 'sftmix[dashboard]')")
    info: dict[str, Any] = {"method": "umap" if use_umap else "pca", "seed": seed, "fit_on": int(len(fit_idx))}
    if not use_umap:
        return _pca(vectors, vectors[fit_idx]).astype(np.float64), info
    import umap

    k = min(n_neighbors, len(fit_idx) - 1)
    reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=0.1, metric="cosine", random_state=seed, n_jobs=1)
    xy = np.empty((n, 2), dtype=np.float64)
    xy[fit_idx] = reducer.fit_transform(vectors[fit_idx])
    rest = np.setdiff1d(np.arange(n), fit_idx)
    for s in range(0, len(rest), fit_sample):  # bounded memory for the transform
        part = rest[s : s + fit_sample]
        xy[part] = reducer.transform(vectors[part])
    info["n_neighbors"] = k
    return xy, info


def project_table(table, *, method: str = "auto", seed: int = 0, fit_sample: int = 50_000) -> dict[str, Any] | None:
    """Project the embeddings stored in ``table`` (a :class:`~profiler.table.writer.TableWriter`) and save them.

    Returns:
        The projection's description (also saved in ``meta`` as ``projection``), or None when there is nothing
        to project or ``method`` is ``none``.
    """
    if method == "none":
        return None
    old = table.get_meta("projection")
    missing = table.n_unprojected()
    if old and not missing and method in ("auto", old.get("method")) and old.get("seed") == seed:
        return old  # a resumed run: already projected
    ids, vectors = table.embedding_matrix()
    if not ids:
        return None
    xy, info = project(vectors, method=method, seed=seed, fit_sample=fit_sample)
    info["dim"] = int(vectors.shape[1])
    table.write_projection(ids, xy)
    table.set_meta({"projection": info})
    return info
