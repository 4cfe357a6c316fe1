"""The synthetic benchmark: deterministic, in the real formats, readable by the package's own readers."""

import json

import numpy as np
import pytest

from gsmt_fast.data.annotations import load_annotations
from gsmt_fast.data.features import FeatureStore
from gsmt_fast.data.grid import SnippetGrid
from gsmt_fast.data.synthetic import PROFILES, class_names, generate

SMALL = 12  # videos per generated dataset in these tests


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Each profile generated twice with seed 0 and once with seed 1."""
    out = {}
    for profile in PROFILES:
        root = tmp_path_factory.mktemp(profile)
        out[profile] = {
            "a": generate(profile, root / "a", seed=0, num_videos=SMALL, progress=False),
            "b": generate(profile, root / "b", seed=0, num_videos=SMALL, progress=False),
            "other": generate(profile, root / "other", seed=1, num_videos=SMALL, progress=False),
        }
    return out


def feature_files(root):
    return sorted(p.name for p in (root / "features").iterdir())


@pytest.mark.parametrize("profile", list(PROFILES))
def test_same_seed_gives_identical_bytes(datasets, profile):
    a, b = datasets[profile]["a"], datasets[profile]["b"]
    for name in ("annotations.json", "dataset.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    files = feature_files(a)
    assert files == feature_files(b) and len(files) == SMALL
    for name in files[:3]:
        assert (a / "features" / name).read_bytes() == (b / "features" / name).read_bytes()


@pytest.mark.parametrize("profile", list(PROFILES))
def test_different_seed_gives_different_data(datasets, profile):
    a, other = datasets[profile]["a"], datasets[profile]["other"]
    assert (a / "annotations.json").read_bytes() != (other / "annotations.json").read_bytes()
    fa, fo = FeatureStore(a / "features"), FeatureStore(other / "features")
    first_a, first_o = fa.load(fa.video_ids()[0]), fo.load(fo.video_ids()[0])
    assert first_a.shape != first_o.shape or not np.array_equal(first_a, first_o)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_files_read_back_through_the_package_readers(datasets, profile):
    root = datasets[profile]["a"]
    prof = PROFILES[profile]
    info = json.loads((root / "dataset.json").read_text())
    assert info["profile"] == profile and info["seed"] == 0
    assert info["grid"]["convention"] == prof["grid"]["convention"]
    assert info["input_mode"] == prof["input_mode"] and info["temporal_scale"] == prof["temporal_scale"]
    assert info["classes"] == class_names(prof["num_classes"]) == sorted(info["classes"])

    aset = load_annotations(root / info["annotations"])
    store = FeatureStore(root / info["features"])
    assert aset.classes == info["classes"]
    assert aset.subsets() == sorted([info["train_split"], info["val_split"]])
    num_train = len(aset.subset(info["train_split"]))
    assert num_train == round(SMALL * prof["num_train"] / (prof["num_train"] + prof["num_val"]))
    assert num_train + len(aset.subset(info["val_split"])) == SMALL
    assert sorted(aset.videos) == store.video_ids()
    assert store.feature_dim == info["feature_dim"] == prof["feature_dim"]

    for vid, video in aset.videos.items():
        feats = store.load(vid)
        assert feats.dtype == np.float32 and feats.shape[1] == prof["feature_dim"]
        assert len(video.labels) >= 1
        assert np.all(video.segments[:, 0] >= 0) and np.all(video.segments[:, 1] <= video.duration)
        assert np.all(video.segments[:, 0] < video.segments[:, 1])
        assert set(video.labels) <= set(aset.classes)
        if profile == "thumos-like":
            assert video.fps in prof["fps_choices"]
            lo, hi = prof["video_snippets"]
            assert lo <= feats.shape[0] <= hi
            # The duration is the end of the last native snippet on the stride grid.
            grid = SnippetGrid.stride(video.fps, prof["grid"]["feat_stride"], prof["grid"]["num_frames"])
            assert video.duration == pytest.approx(grid.to_seconds(feats.shape[0]), abs=1e-4)
            lo, hi = prof["instances_per_video"]
            assert len(video.labels) <= hi
        else:
            assert video.fps is None  # the official ActivityNet format has no fps
            assert len(set(video.labels)) == 1
            expected_n = video.duration * prof["native_fps"] / prof["grid"]["feat_stride"]
            assert feats.shape[0] == pytest.approx(expected_n, abs=0.01)
            lo, hi = prof["video_seconds"]
            assert lo - 1 <= video.duration <= hi + 1


def test_profile_specific_file_layouts(datasets):
    thumos, anet = datasets["thumos-like"]["a"], datasets["anet-like"]["a"]
    assert all(name.endswith(".npy") and not name.startswith("v_") for name in feature_files(thumos))
    assert all(name.endswith(".npz") and name.startswith("v_") for name in feature_files(anet))
    thumos_json = json.loads((thumos / "annotations.json").read_text())
    first = next(iter(thumos_json["database"].values()))
    assert "fps" in first and "label_id" in first["annotations"][0]  # ActionFormer layout
    anet_json = json.loads((anet / "annotations.json").read_text())
    assert set(anet_json) == {"version", "taxonomy", "database"}
    assert all(not vid.startswith("v_") for vid in anet_json["database"])


def test_features_carry_class_signal(datasets):
    """Snippets inside instances are, on average, closer to their class than to the other classes."""
    root = datasets["thumos-like"]["a"]
    aset = load_annotations(root / "annotations.json")
    store = FeatureStore(root / "features")
    k = len(aset.classes)
    means = np.zeros((k, PROFILES["thumos-like"]["feature_dim"]))
    counts = np.zeros(k)
    for vid, video in aset.videos.items():
        feats = store.load(vid)
        grid = SnippetGrid.stride(video.fps, 4, 16)
        centres = grid.centers(len(feats))
        for (start, end), label in zip(video.segments, video.labels):
            inside = (centres > start) & (centres < end)
            means[aset.class_index(label)] += feats[inside].sum(0)
            counts[aset.class_index(label)] += inside.sum()
    present = counts > 0
    means = means[present] / counts[present, None]
    norms = np.linalg.norm(means, axis=1)
    cosine = means @ means.T / np.outer(norms, norms)
    assert np.all(np.argmax(cosine, axis=1) == np.arange(len(means)))
    assert np.all(norms > 0.3)


def test_num_videos_override_and_stale_files(tmp_path):
    out = generate("anet-like", tmp_path / "d", seed=3, num_videos=6, progress=False)
    assert len(FeatureStore(out / "features").video_ids()) == 6
    out = generate("anet-like", tmp_path / "d", seed=3, num_videos=4, progress=False)
    # Regenerating into the same folder removes the feature files of the earlier, larger dataset.
    assert len(FeatureStore(out / "features").video_ids()) == 4
    assert len(load_annotations(out / "annotations.json").videos) == 4


def test_refuses_to_clobber_foreign_feature_folder(tmp_path):
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "mine.npy").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="not written by the synthetic generator"):
        generate("thumos-like", tmp_path, num_videos=2, progress=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic profile 'coco'"):
        generate("coco", tmp_path)
    with pytest.raises(ValueError, match="unknown knob 'noise'"):
        generate("thumos-like", tmp_path, overrides={"noise": 1.0})
    with pytest.raises(ValueError, match="num_videos must be >= 2"):
        generate("thumos-like", tmp_path, num_videos=1)
