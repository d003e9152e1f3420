"""Pruning masks and SparseGPT against independent numpy references (no model, < 2 s)."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.convert.gptq.calibrate import output_error
from lamina.convert.prune.masks import PruneError, magnitude_mask, nm_mask, parse_nm, wanda_mask
from lamina.convert.prune.sparsegpt import sparsegpt_prune
from lamina.convert.prune.unstructured import prune_linear


def _layer(rows: int = 48, cols: int = 64, tokens: int = 512, seed: int = 0):
    """A random weight and correlated inputs (few latent factors, uneven column scales), H = X^T X."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((rows, cols)).astype(np.float32)
    Z = rng.standard_normal((tokens, 8))
    X = Z @ rng.standard_normal((8, cols)) + 0.3 * rng.standard_normal((tokens, cols))
    X *= rng.uniform(0.1, 3.0, cols)[None, :]
    return W, X, X.T @ X


def test_wanda_mask_equals_a_per_row_reference() -> None:
    W, X, H = _layer()
    got = wanda_mask(W, np.diag(H), 0.5)
    norms = np.sqrt((X**2).sum(0))  # ||X_j||_2 straight from the inputs, not from H
    for i in range(W.shape[0]):
        score = [abs(float(W[i, j])) * norms[j] for j in range(W.shape[1])]
        pruned = sorted(range(W.shape[1]), key=lambda j: score[j])[: W.shape[1] // 2]
        want = np.ones(W.shape[1], dtype=bool)
        want[pruned] = False
        assert np.array_equal(got[i], want), i
    assert not np.array_equal(got, magnitude_mask(W, 0.5)), "the input norms must change the choice"


@pytest.mark.parametrize("nm", ["2:4", "4:8"])
def test_nm_mask_equals_a_per_group_reference(nm: str) -> None:
    n, m = parse_nm(nm)
    W, X, H = _layer()
    score = np.abs(W) * np.sqrt(np.diag(H))[None, :]
    got = nm_mask(score, n, m)
    for i in range(W.shape[0]):
        for g in range(0, W.shape[1], m):
            best = sorted(range(g, g + m), key=lambda j: -score[i, j])[:n]
            assert sorted(np.flatnonzero(got[i, g : g + m]) + g) == sorted(best)
    assert got.sum() == W.size * n // m


def test_magnitude_mask_removes_the_smallest_of_the_matrix() -> None:
    W, _, _ = _layer()
    keep = magnitude_mask(W, 0.25)
    assert (~keep).sum() == W.size // 4
    assert np.abs(W[~keep]).max() <= np.abs(W[keep]).min()


def test_sparsegpt_at_zero_sparsity_is_the_identity() -> None:
    W, _, H = _layer()
    W2, keep = sparsegpt_prune(W, H, 0.0)
    assert keep.all()
    assert np.array_equal(W2, W)


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_beats_magnitude_and_wanda_on_correlated_inputs(nm) -> None:
    W, _, H = _layer(rows=64, cols=256)
    errs = {m: output_error(W, prune_linear(W, H, m, 0.5, nm), H) for m in ("magnitude", "wanda", "sparsegpt")}
    W2 = prune_linear(W, H, "sparsegpt", 0.5, nm)
    if nm is None:
        assert np.all((W2 == 0).sum(1) == W.shape[1] // 2)  # every row at the target
    else:
        assert np.all((W2.reshape(64, -1, 4) != 0).sum(-1) <= 2)
    assert errs["sparsegpt"] < errs["wanda"] < errs["magnitude"], errs


@pytest.mark.parametrize("bad", ["2", "4:2", "0:4", "a:b", "2:2"])
def test_bad_nm_is_refused(bad: str) -> None:
    with pytest.raises(PruneError, match="N:M"):
        parse_nm(bad)


def test_bad_sparsity_is_refused() -> None:
    W, _, H = _layer()
    with pytest.raises(PruneError, match="sparsity"):
        magnitude_mask(W, 1.0)
    with pytest.raises(PruneError, match="multiple of 3"):
        nm_mask(np.abs(W), 1, 3)


def test_layer_choice_by_angular_distance() -> None:
    from lamina.convert.prune.structured import angular_distance, layers_to_drop

    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert angular_distance(a, 3 * a) == pytest.approx(0.0, abs=1e-7)
    assert angular_distance(a, np.array([[0.0, 1.0], [0.0, -1.0]])) == pytest.approx(0.75)  # 90 and 180 degrees
    # 5 layers; the stream barely changes across layers 2..3 as a block, layer 0 alone changes little
    d = np.full((6, 6), 0.5)
    d[0, 1] = 0.05
    d[2, 4] = 0.01
    d[2, 3], d[3, 4] = 0.2, 0.2
    assert layers_to_drop(d, 2, "block") == [2, 3]
    assert layers_to_drop(d, 1, "each") == [0]
    with pytest.raises(PruneError, match="prune-layers"):
        layers_to_drop(d, 5, "block")
