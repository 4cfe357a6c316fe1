"""The time <-> snippet grid : both conventions, by hand and by round trip."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gsmt_fast.data.grid import SnippetGrid, resize_features, window_starts


@pytest.mark.parametrize(
    "grid",
    [
        SnippetGrid.stride(fps=30.0, feat_stride=4, num_frames=16),
        SnippetGrid.stride(fps=25.0, feat_stride=8, num_frames=16, first_snippet=37),
        SnippetGrid.resize(duration=123.4, temporal_scale=100),
    ],
)
def test_round_trip_seconds_units_seconds(grid):
    seconds = np.array([0.0, 0.1, 1.5, 17.25, 99.9])
    np.testing.assert_allclose(grid.to_seconds(grid.to_units(seconds)), seconds, atol=1e-9)
    units = np.array([0.0, 0.5, 3.0, 255.75])
    np.testing.assert_allclose(grid.to_units(grid.to_seconds(units)), units, atol=1e-9)


@given(
    fps=st.floats(1.0, 120.0),
    stride=st.integers(1, 32),
    num_frames=st.integers(1, 64),
    first=st.integers(0, 5000),
    u=st.floats(-10.0, 5000.0),
)
@settings(max_examples=50, deadline=None)
def test_round_trip_property(fps, stride, num_frames, first, u):
    grid = SnippetGrid.stride(fps, stride, num_frames, first_snippet=first)
    assert grid.to_units(grid.to_seconds(u)) == pytest.approx(u, abs=1e-6)


@pytest.mark.parametrize("i", [0, 1, 10])
def test_stride_centre_by_hand(i):
    fps, stride, nf = 30.0, 4, 16
    grid = SnippetGrid.stride(fps, stride, nf)
    expected = (i * stride + nf / 2) / fps
    assert grid.centers(i + 1)[i] == pytest.approx(expected)
    # A run of one snippet spans half a stride either side of its centre.
    start, end = grid.runs_to_seconds(i, i)[0]
    assert start == pytest.approx(expected - stride / 2 / fps)
    assert end == pytest.approx(expected + stride / 2 / fps)


def test_stride_values_by_hand():
    grid = SnippetGrid.stride(30.0, 4, 16)
    # centre of snippet 0: 8 frames = 0.2666 s; of snippet 10: 48 frames = 1.6 s.
    np.testing.assert_allclose(grid.centers(11)[[0, 1, 10]], [8 / 30, 12 / 30, 48 / 30])


@pytest.mark.parametrize("a,b", [(0, 0), (3, 7), (99, 99)])
def test_resize_runs_by_hand(a, b):
    duration, t = 80.0, 100
    grid = SnippetGrid.resize(duration, t)
    np.testing.assert_allclose(grid.runs_to_seconds(a, b)[0], np.array([a, b + 1]) * duration / t)


def test_resize_covers_whole_video():
    grid = SnippetGrid.resize(42.0, 100)
    assert grid.to_seconds(0) == 0.0
    assert grid.to_seconds(100) == pytest.approx(42.0)


def test_first_snippet_offset_equals_shifted_indices():
    base = SnippetGrid.stride(29.97, 4, 16)
    window = SnippetGrid.stride(29.97, 4, 16, first_snippet=192)
    local = np.array([0, 5, 63, 255])
    np.testing.assert_allclose(window.centers(256)[local], base.centers(192 + 256)[local + 192])
    np.testing.assert_allclose(window.runs_to_seconds(local, local + 3), base.runs_to_seconds(local + 192, local + 195))


def test_invalid_grids_are_rejected():
    with pytest.raises(ValueError, match="fps"):
        SnippetGrid.stride(0.0, 4, 16)
    with pytest.raises(ValueError, match="duration"):
        SnippetGrid.resize(0.0, 100)


@pytest.mark.parametrize("n,t", [(37, 100), (100, 100), (250, 100), (1, 16), (513, 256)])
def test_resize_features_matches_torch_interpolate(n, t):
    feats = np.random.default_rng(n).standard_normal((n, 5)).astype(np.float32)
    ours = resize_features(feats, t)
    channels_first = torch.from_numpy(feats).T[None]  # (1, d, n)
    ref = torch.nn.functional.interpolate(channels_first, size=t, mode="linear", align_corners=False)[0].T.numpy()
    assert ours.shape == (t, 5) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,t,overlap", [(1000, 256, 0.25), (257, 256, 0.5), (300, 100, 0.0), (5000, 256, 0.9)])
def test_window_starts_cover_every_snippet(n, t, overlap):
    starts = window_starts(n, t, overlap)
    covered = np.zeros(n, dtype=bool)
    for s in starts:
        assert 0 <= s < n
        covered[s : s + t] = True
    assert covered.all()
    assert starts == sorted(set(starts))
    # Only the last window may run past the end (it is padded); no window is redundant.
    assert all(s + t < n for s in starts[:-1])


def test_window_starts_by_hand():
    assert window_starts(100, 256, 0.25) == [0]
    assert window_starts(256, 256, 0.25) == [0]
    assert window_starts(1000, 256, 0.25) == [0, 192, 384, 576, 768]  # the last one has 232 valid snippets
    assert window_starts(512, 256, 0.5) == [0, 128, 256]
    assert window_starts(257, 256, 0.25) == [0, 192]
    assert window_starts(300, 100, 0.0) == [0, 100, 200]
