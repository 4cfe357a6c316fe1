"""Feature readers: every on-disk format, v_ prefix handling, several roots, and the error messages."""

import re

import numpy as np
import pytest

from gsmt_fast.data.features import FeatureStore, read_feature_file, write_features


def random_features(n=20, d=6, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("ext", [".npy", ".npz", ".csv"])
def test_folder_formats_round_trip(tmp_path, ext):
    feats = random_features()
    write_features(tmp_path / f"vid1{ext}", feats)
    store = FeatureStore(tmp_path)
    loaded = store.load("vid1")
    assert loaded.dtype == np.float32 and loaded.shape == (20, 6)
    np.testing.assert_array_equal(loaded, feats)  # the CSV writer keeps 9 significant digits: exact for float32
    assert store.video_ids() == ["vid1"] and "vid1" in store and store.feature_dim == 6


def test_csv_has_a_header_row(tmp_path):
    write_features(tmp_path / "a.csv", random_features(n=3, d=4))
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert lines[0] == "f0,f1,f2,f3" and len(lines) == 4


def test_bmn_style_csv_written_by_hand(tmp_path):
    header = ",".join(f"c{j}" for j in range(400))
    rows = "\n".join(",".join(f"{(i * 400 + j) * 0.001:.3f}" for j in range(400)) for i in range(100))
    (tmp_path / "v_QOlSCBRmfWY.csv").write_text(header + "\n" + rows + "\n")
    loaded = FeatureStore(tmp_path).load("QOlSCBRmfWY")
    assert loaded.shape == (100, 400)
    assert loaded[1, 2] == pytest.approx(0.402)


def test_hdf5_round_trip_and_prefix(tmp_path):
    pytest.importorskip("h5py")
    a, b = random_features(seed=1), random_features(n=9, seed=2)
    path = tmp_path / "feats.h5"
    write_features(path, {"v_alpha": a})
    write_features(path, b, key="beta")  # added to the existing file
    store = FeatureStore(path)
    assert store.video_ids() == ["alpha", "beta"]
    np.testing.assert_array_equal(store.load("alpha"), a)
    np.testing.assert_array_equal(store.load("v_beta"), b)


def test_npz_key_fallback_and_error(tmp_path):
    feats = random_features()
    np.savez(tmp_path / "one.npz", other=feats)
    np.testing.assert_array_equal(FeatureStore(tmp_path).load("one"), feats)
    np.savez(tmp_path / "two.npz", x=feats, y=feats)
    with pytest.raises(KeyError, match=r"two.npz.*'x', 'y'"):
        FeatureStore(tmp_path).load("two")


def test_npz_bytes_are_reproducible(tmp_path):
    feats = random_features()
    write_features(tmp_path / "a.npz", feats)
    write_features(tmp_path / "b.npz", feats)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["feats"], feats)


@pytest.mark.parametrize("file_name,asked", [("v_abc.npy", "abc"), ("v_abc.npy", "v_abc"), ("abc.npy", "v_abc")])
def test_v_prefix_resolution_both_ways(tmp_path, file_name, asked):
    write_features(tmp_path / file_name, random_features())
    store = FeatureStore(tmp_path)
    assert store.load(asked).shape == (20, 6)
    assert asked in store and store.video_ids() == ["abc"]


def test_two_roots_concatenate_along_d(tmp_path):
    rgb, flow = tmp_path / "rgb", tmp_path / "flow"
    a, b = random_features(d=3, seed=1), random_features(d=5, seed=2)
    write_features(rgb / "vid.npy", a)
    write_features(flow / "v_vid.npz", b)
    write_features(rgb / "only_rgb.npy", a)
    store = FeatureStore([rgb, flow])
    np.testing.assert_array_equal(store.load("vid"), np.concatenate([a, b], axis=1))
    assert store.feature_dim == 8
    assert store.video_ids() == ["vid"] and "only_rgb" not in store


def test_two_roots_small_length_difference_is_truncated(tmp_path):
    a, b = random_features(n=20, d=3), random_features(n=22, d=2)
    write_features(tmp_path / "r1" / "vid.npy", a)
    write_features(tmp_path / "r2" / "vid.npy", b)
    loaded = FeatureStore([tmp_path / "r1", tmp_path / "r2"]).load("vid")
    np.testing.assert_array_equal(loaded, np.concatenate([a, b[:20]], axis=1))


def test_two_roots_length_mismatch_is_an_error(tmp_path):
    write_features(tmp_path / "r1" / "vid.npy", random_features(n=20))
    write_features(tmp_path / "r2" / "vid.npy", random_features(n=30))
    with pytest.raises(ValueError, match=r"'vid'.*different lengths.*: 20.*: 30"):
        FeatureStore([tmp_path / "r1", tmp_path / "r2"]).load("vid")


def test_nan_is_an_error_naming_the_file(tmp_path):
    feats = random_features()
    feats[3, 2] = np.nan
    write_features(tmp_path / "bad.npy", feats)
    with pytest.raises(ValueError, match=r"bad\.npy.*NaN or inf \(1 of 20 snippets\)"):
        FeatureStore(tmp_path).load("bad")


def test_missing_video_names_id_and_root(tmp_path):
    write_features(tmp_path / "present.npy", random_features())
    with pytest.raises(KeyError, match=rf"'absent'.*{re.escape(str(tmp_path))}"):
        FeatureStore(tmp_path).load("absent")


def test_wrong_ndim_and_empty(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros(10, dtype=np.float32))
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "zero.npy", np.zeros((0, 4), dtype=np.float32))
    store = FeatureStore(tmp_path)
    with pytest.raises(ValueError, match=r"flat\.npy.*2-D.*\(10,\)"):
        store.load("flat")
    with pytest.raises(ValueError, match=r"empty\.npy: empty file"):
        store.load("empty")
    with pytest.raises(ValueError, match=r"zero\.npy: empty feature array"):
        store.load("zero")


def test_missing_root_and_unsupported_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FeatureStore(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unsupported feature file type"):
        write_features(tmp_path / "x.txt", random_features())
    with pytest.raises(ValueError, match="unsupported"):
        read_feature_file(tmp_path / "x.txt")


def test_ambiguous_files_for_one_video(tmp_path):
    write_features(tmp_path / "abc.npy", random_features())
    write_features(tmp_path / "v_abc.npy", random_features())
    with pytest.raises(ValueError, match="several feature files for video 'abc'"):
        FeatureStore(tmp_path).load("abc")
