import numpy as np

from gsmt_fast.baseline import runs_of, snippet_detections
from gsmt_fast.data.grid import SnippetGrid


def test_runs_of_by_hand():
    bg = 3
    assert runs_of(np.array([3, 0, 0, 3, 1, 1, 0, 3]), bg) == [(1, 2, 0), (4, 5, 1), (6, 6, 0)]
    assert runs_of(np.array([2, 2, 2]), bg) == [(0, 2, 2)]
    assert runs_of(np.array([3, 3]), bg) == []
    assert runs_of(np.array([], dtype=np.int64), bg) == []


def test_snippet_detections_threshold_and_seconds():
    # 2 classes + background; snippets 1..2 are class 1 above 0.5, snippet 4 class 0 at 0.45 (below threshold).
    probs = np.array([[0.1, 0.1, 0.8], [0.1, 0.7, 0.2], [0.2, 0.6, 0.2], [0.0, 0.1, 0.9], [0.45, 0.1, 0.45]])
    grid = SnippetGrid.stride(fps=10.0, feat_stride=2, num_frames=4)  # centre of snippet i: (2i + 2) / 10
    segs, scores, labels = snippet_detections(probs, 0.5, grid, duration=None)
    assert labels == [1]
    np.testing.assert_allclose(segs[0], [(0.5 * 2 + 2) / 10, (2.5 * 2 + 2) / 10])
    np.testing.assert_allclose(scores, [0.65])
    segs, _, labels = snippet_detections(probs, 0.4, grid, duration=0.6)
    assert labels == [1, 0] and segs[0][1] == 0.6  # clamped to the duration
