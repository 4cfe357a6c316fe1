"""Per-video snippet features on disk (docs/DESIGN.md, "Data formats").

A *root* is either a folder with one file per video, or one HDF5 file with one dataset per video:

- ``<id>.npy``: a ``(T, d)`` array;
- ``<id>.npz``: key ``feats`` (or the only array in the file);
- ``<id>.csv``: a header row, then one row per snippet (BMN's 100 x 400 TSN features);
- ``*.h5`` / ``*.hdf5``: dataset ``<id>`` (needs ``h5py``: ``pip install gsmt_fast[hdf5]``).

File names and HDF5 keys may carry a ``v_`` prefix or not; lookups work either way. Several roots are concatenated
along the feature dimension (e.g. RGB and flow streams kept in separate folders).
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from gsmt_fast.data.annotations import canonical_video_id
from gsmt_fast.files import atomic_path

FEATURE_EXTENSIONS = (".npy", ".npz", ".csv")
HDF5_EXTENSIONS = (".h5", ".hdf5")
NPZ_KEY = "feats"
# Streams extracted separately (RGB / flow) often differ by a snippet or two at the end of a video.
MAX_LENGTH_MISMATCH = 2


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading or writing HDF5 features needs h5py: pip install gsmt_fast[hdf5]") from None
    return h5py


class _FolderRoot:
    """A folder of per-video files, indexed once by canonical video id."""

    def __init__(self, path: Path):
        self.path = path
        self.files: dict[str, list[Path]] = {}
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            name = Path(entry.name)
            if entry.is_file() and name.suffix.lower() in FEATURE_EXTENSIONS and not entry.name.startswith("."):
                self.files.setdefault(canonical_video_id(name.stem), []).append(path / entry.name)
        self.ids = frozenset(self.files)

    def load(self, vid: str) -> np.ndarray:
        paths = self.files[vid]
        if len(paths) > 1:
            raise ValueError(f"several feature files for video {vid!r} in {self.path}: {[p.name for p in paths]}")
        return read_feature_file(paths[0])

    def num_snippets(self, vid: str) -> int:
        paths = self.files[vid]
        if len(paths) == 1 and paths[0].suffix.lower() == ".npy":
            return npy_shape(paths[0])[0]
        return len(self.load(vid))

    def describe(self, vid: str) -> str:
        return str(self.files[vid][0])


class _HDF5Root:
    """One HDF5 file with a dataset per video; the file is reopened per read so that worker processes can share it."""

    def __init__(self, path: Path):
        self.path = path
        h5py = _import_h5py()
        self.keys: dict[str, list[str]] = {}
        with h5py.File(path, "r") as f:
            for key in sorted(f.keys()):
                self.keys.setdefault(canonical_video_id(key), []).append(key)
        self.ids = frozenset(self.keys)

    def load(self, vid: str) -> np.ndarray:
        keys = self.keys[vid]
        if len(keys) > 1:
            raise ValueError(f"several datasets for video {vid!r} in {self.path}: {keys}")
        h5py = _import_h5py()
        with h5py.File(self.path, "r") as f:
            item = f[keys[0]]
            if not isinstance(item, h5py.Dataset):
                raise ValueError(f"{self.path}: {keys[0]!r} is a group, expected a (T, d) dataset")
            return np.asarray(item[()])

    def num_snippets(self, vid: str) -> int:
        keys = self.keys[vid]
        if len(keys) > 1:
            return len(self.load(vid))  # raises the ambiguity error
        h5py = _import_h5py()
        with h5py.File(self.path, "r") as f:
            item = f[keys[0]]
            return int(item.shape[0]) if isinstance(item, h5py.Dataset) and item.ndim >= 1 else len(self.load(vid))

    def describe(self, vid: str) -> str:
        return f"{self.path}[{self.keys[vid][0]}]"


class FeatureStore:
    """Reads ``(n, d)`` snippet features by video id from one or more roots (folders or HDF5 files)."""

    def __init__(self, roots: str | os.PathLike | Sequence[str | os.PathLike], dtype=np.float32):
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        if not roots:
            raise ValueError("FeatureStore needs at least one feature folder or HDF5 file")
        self.dtype = np.dtype(dtype)
        self.roots: list[_FolderRoot | _HDF5Root] = []
        for root in roots:
            path = Path(root)
            if path.is_dir():
                self.roots.append(_FolderRoot(path))
            elif path.is_file() and path.suffix.lower() in HDF5_EXTENSIONS:
                self.roots.append(_HDF5Root(path))
            elif path.exists():
                raise ValueError(f"feature root {path} is neither a folder nor an HDF5 file ({HDF5_EXTENSIONS})")
            else:
                raise FileNotFoundError(f"feature root not found: {path}")
        common = frozenset.intersection(*(r.ids for r in self.roots))
        self._ids = sorted(common)
        self._feature_dim: int | None = None

    def __repr__(self) -> str:
        return f"FeatureStore({[str(r.path) for r in self.roots]}, {len(self._ids)} videos)"

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, video_id: object) -> bool:
        if not isinstance(video_id, str):
            return False
        vid = canonical_video_id(video_id)
        return all(vid in r.ids for r in self.roots)

    def video_ids(self) -> list[str]:
        """Canonical ids (no ``v_``) of the videos present in every root, sorted."""
        return list(self._ids)

    @property
    def feature_dim(self) -> int:
        """d of the concatenated features, read from the first video."""
        if self._feature_dim is None:
            if not self._ids:
                raise ValueError(f"no video has features in every root of {self!r}")
            self._feature_dim = int(self.load(self._ids[0]).shape[1])
        return self._feature_dim

    def load(self, video_id: str) -> np.ndarray:
        """Features of one video as an ``(n, d)`` array of ``self.dtype`` (roots concatenated along d)."""
        vid = canonical_video_id(video_id)
        parts = []
        for root in self.roots:
            if vid not in root.ids:
                roots = ", ".join(str(r.path) for r in self.roots)
                raise KeyError(f"no features for video {video_id!r} in {root.path} (roots: {roots})")
            parts.append(_validated(root.load(vid), root.describe(vid), self.dtype))
        if len(parts) == 1:
            return parts[0]
        lengths = [p.shape[0] for p in parts]
        shortest = min(lengths)
        if max(lengths) - shortest > MAX_LENGTH_MISMATCH:
            sources = ", ".join(f"{root.describe(vid)}: {n}" for root, n in zip(self.roots, lengths))
            raise ValueError(f"video {video_id!r}: feature streams have different lengths ({sources})")
        return np.concatenate([p[:shortest] for p in parts], axis=1)

    def num_snippets(self, video_id: str) -> int:
        """Number of snippets :meth:`load` returns for a video, read from the file headers where the format has
        them (``.npy``, HDF5) so that planning work over a large archive does not read its features; other formats
        are loaded. Several roots: the shortest stream (what :meth:`load` keeps)."""
        vid = canonical_video_id(video_id)
        counts = []
        for root in self.roots:
            if vid not in root.ids:
                raise KeyError(f"no features for video {video_id!r} in {root.path}")
            counts.append(root.num_snippets(vid))
        return min(counts)


def _validated(array: np.ndarray, source: str, dtype: np.dtype) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{source}: features must be a 2-D (snippets, dim) array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{source}: empty feature array of shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=dtype)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise ValueError(f"{source}: features contain NaN or inf ({bad} of {array.shape[0]} snippets)")
    return array


def npy_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """Shape of the array in a ``.npy`` file, from its header only."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, _ = np.lib.format.read_array_header_2_0(f)
            else:  # newer header versions: let NumPy parse it, mapping (not reading) the data
                shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read the .npy header ({e})") from e
    return tuple(int(n) for n in shape)


def read_feature_file(path: str | os.PathLike) -> np.ndarray:
    """Read one per-video feature file (.npy, .npz or .csv) without validating its shape."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FEATURE_EXTENSIONS:
        raise ValueError(f"{path}: unsupported feature file type {suffix!r}; expected one of {FEATURE_EXTENSIONS}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".csv":
            return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            if NPZ_KEY in names:
                return npz[NPZ_KEY]
            if len(names) == 1:
                return npz[names[0]]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: cannot read features ({e})") from e
    raise KeyError(f"{path}: no {NPZ_KEY!r} array and not exactly one array to fall back on (keys: {names})")


def write_features(
    path: str | os.PathLike, features: np.ndarray | Mapping[str, np.ndarray], key: str | None = None
) -> None:
    """Write features atomically in the format named by the extension of ``path``.

    ``.npy``, ``.npz`` (key ``feats``) and ``.csv`` take one ``(n, d)`` array. ``.h5``/``.hdf5`` take either a
    mapping ``{video_id: array}`` (the file is replaced) or one array with ``key`` (added to, or replaced in, the
    existing file). Bytes depend only on the data, so the same array always gives the same file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in HDF5_EXTENSIONS:
        _write_hdf5(path, features, key)
        return
    if isinstance(features, Mapping):
        raise TypeError(f"{path}: a mapping of arrays can only be written to an HDF5 file")
    array = np.asarray(features)
    if array.ndim != 2:
        raise ValueError(f"{path}: features must be a 2-D (snippets, dim) array, got shape {array.shape}")
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as f:
                np.lib.format.write_array(f, array, allow_pickle=False)
        elif suffix == ".npz":
            _write_npz(tmp, {NPZ_KEY: array})
        elif suffix == ".csv":
            header = ",".join(f"f{j}" for j in range(array.shape[1]))
            # 9 significant digits reproduce every float32 exactly.
            np.savetxt(tmp, array, delimiter=",", header=header, comments="", fmt="%.9g")
        else:
            raise ValueError(
                f"{path}: unsupported feature file type {suffix!r}; expected one of "
                f"{FEATURE_EXTENSIONS + HDF5_EXTENSIONS}"
            )


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    # np.savez stamps the current time into the zip entries; a fixed timestamp keeps the bytes reproducible.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buffer.getvalue())


def _write_hdf5(path: Path, features, key: str | None) -> None:
    h5py = _import_h5py()
    if isinstance(features, Mapping):
        items: Iterable = features.items()
        start_from_existing = False
    else:
        if key is None:
            raise ValueError(f"{path}: writing one array to an HDF5 file needs key= (the video id)")
        items = [(key, features)]
        start_from_existing = path.exists()
    with atomic_path(path) as tmp:
        if start_from_existing:
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a" if start_from_existing else "w") as f:
            for name, array in items:
                array = np.asarray(array)
                if array.ndim != 2:
                    raise ValueError(f"{path}[{name}]: features must be 2-D (snippets, dim), got {array.shape}")
                if name in f:
                    del f[name]
                f.create_dataset(name, data=array)


__all__ = ["FeatureStore", "read_feature_file", "npy_shape", "write_features", "FEATURE_EXTENSIONS", "HDF5_EXTENSIONS"]
