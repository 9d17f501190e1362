"""The embeddings' 2-D projection: seeded, sampled fits for large sets, a PCA fallback."""

from __future__ import annotations

import numpy as np
import pytest

from profiler.embed import project


def blobs(n, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, dim)) * 5
    labels = np.arange(n) % 3
    return (centers[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def test_umap_is_seeded_and_separates_clusters():
    x, labels = blobs(90)
    a, info = project(x, method="umap", seed=1)
    b, _ = project(x, method="umap", seed=1)
    assert info["method"] == "umap" and a.shape == (90, 2)
    np.testing.assert_array_equal(a, b)
    # Each cluster's points lie closer to their own centroid than to the others'.
    cent = np.stack([a[labels == k].mean(0) for k in range(3)])
    nearest = np.argmin(((a[:, None] - cent[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.95


def test_large_sets_fit_on_a_sample_and_transform_the_rest():
    x, labels = blobs(120)
    xy, info = project(x, method="umap", seed=0, fit_sample=60)
    assert info["fit_on"] == 60 and np.isfinite(xy).all()
    cent = np.stack([xy[labels == k].mean(0) for k in range(3)])
    assert (np.argmin(((xy[:, None] - cent[None]) ** 2).sum(-1), axis=1) == labels).mean() > 0.9


def test_pca_and_tiny_sets():
    x, _ = blobs(30)
    xy, info = project(x, method="pca")
    assert info["method"] == "pca" and xy.shape == (30, 2)
    assert xy[:, 0].var() >= xy[:, 1].var()  # the first axis carries the most variance
    one, info = project(x[:1], method="auto")
    assert info["method"] == "pca" and one.shape == (1, 2) and np.isfinite(one).all()
    with pytest.raises(ValueError, match="projection method"):
        project(x, method="tsne")
