"""Spiking Heidelberg Digits (SHD, Cramer et al. 2020): find, download, check and bin into rasters.

Official files `shd_train.h5` / `shd_test.h5` (served gzipped from https://zenkelab.org/datasets/
with md5 checksums in `md5sums.txt`). Layout: `spikes/times` (per sample a float array of spike
times in s), `spikes/units` (per sample a uint16 array of input units 0..699), `labels`
(20 classes), optional `extra/` metadata. h5py and pooch are imported only when needed.

Binning (the original's, stork's `HDF5Dataset`): a spike at time t goes to step
trunc(float32(t * (1/dt))), the product taken in the dtype the file stores t in (float16 times
stay float16, as numpy computes them there); spikes whose scaled time is >= nb_steps are
dropped; several spikes of one unit in one step count once (binary raster). Spike times must
be floating-point seconds: integer times are refused (their unit cannot be known).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sgtheory.data.randman import _check_seed
from sgtheory.errors import ConfigError, DataError, check_choice, check_positive

SHD_URL = "https://zenkelab.org/datasets"
SHD_FILES = {"train": "shd_train.h5", "test": "shd_test.h5"}
MD5_FILE = "md5sums.txt"
SHD_UNITS = 700
SHD_CLASSES = 20

HOW_TO_GET = (
    f"Download shd_train.h5.gz and shd_test.h5.gz from {SHD_URL}/ (checksums in {MD5_FILE}), "
    "gunzip them into one folder and set dataset.datadir=<that folder>; or set "
    "dataset.download=true to fetch and check them automatically."
)


def _h5py():
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading SHD needs h5py: pip install h5py (or pip install -e '.[experiments]')"
        ) from err
    return h5py


def _pooch():
    try:
        import pooch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Downloading SHD needs pooch: pip install pooch (or pip install -e '.[experiments]')"
        ) from err
    return pooch


# ----------------------------------------------------------------------------- writing


def write_shd_like(
    path: str | os.PathLike,
    times_list: Sequence[Sequence[float]],
    units_list: Sequence[Sequence[int]],
    labels: Sequence[int],
    speakers: Sequence[int] | None = None,
) -> Path:
    """Write a small file in the official SHD layout (for tests and end-to-end checks).

    `spikes/times`: vlen float32 per sample; `spikes/units`: vlen uint16; `labels`: uint16;
    `extra/speaker` if `speakers` is given.
    """
    h5py = _h5py()
    n = len(labels)
    if len(times_list) != n or len(units_list) != n:
        raise ValueError(
            f"times_list ({len(times_list)}), units_list ({len(units_list)}) and labels ({n}) "
            "must have one entry per sample"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        times_ds = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float32))
        units_ds = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
        for i, (t, u) in enumerate(zip(times_list, units_list)):
            times_ds[i] = np.asarray(t, dtype=np.float32)
            units_ds[i] = np.asarray(u, dtype=np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
        if speakers is not None:
            f.create_dataset("extra/speaker", data=np.asarray(speakers, dtype=np.uint16))
    return path


# ----------------------------------------------------------------------------- reading


def _file_for(path_or_datadir: str | os.PathLike, split: str) -> Path:
    """The h5 file: the path itself, or <datadir>/shd_<split>.h5."""
    check_choice("dataset.split", split, SHD_FILES)
    path = Path(path_or_datadir).expanduser()
    if path.is_dir():
        path = path / SHD_FILES[split]
    if not path.is_file():
        hint = ""
        if Path(str(path) + ".gz").is_file():
            hint = f" (found {path.name}.gz: gunzip it first)"
        raise FileNotFoundError(f"SHD file {path} not found{hint}. {HOW_TO_GET}")
    return path


def _h5_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The raw spikes/times, spikes/units and labels of an SHD file, or a DataError."""
    h5py = _h5py()
    bad = f"{path} is not a readable SHD file"
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("spikes/times", "spikes/units", "labels") if k not in f]
            if missing:
                raise DataError(
                    f"{bad}: it lacks the dataset(s) {', '.join(missing)} (expected spikes/times, "
                    f"spikes/units and labels). {HOW_TO_GET}"
                )
            return tuple(np.asarray(f[k][()]) for k in ("spikes/times", "spikes/units", "labels"))
    except DataError:
        raise
    except Exception as err:  # h5py raises OSError, KeyError, TypeError ... for damaged files
        why = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise DataError(
            f"{bad} (empty, not HDF5, truncated or damaged: {why}). Delete it and get it "
            f"again. {HOW_TO_GET}"
        ) from None


def _per_sample(path: Path, raw: np.ndarray, name: str, kinds: str) -> list[np.ndarray]:
    """One 1-D array per sample (variable-length or rows of a 2-D array) of dtype `kinds`."""
    if raw.dtype == object and raw.ndim == 1:
        samples = [np.asarray(a) for a in raw]
    elif raw.ndim == 2 and raw.dtype.kind in kinds:
        samples = list(raw)
    else:
        raise DataError(
            f"{path}: {name} must hold one array per sample, got shape {raw.shape} of dtype "
            f"{raw.dtype}"
        )
    for i, a in enumerate(samples):
        if a.ndim != 1 or a.dtype.kind not in kinds:
            what = "numbers (seconds)" if "f" in kinds else "integers"
            raise DataError(
                f"{path}: sample {i}: {name} must be a 1-D array of {what}, got shape "
                f"{a.shape} of dtype {a.dtype}"
            )
    return samples


def _first_sample(counts: np.ndarray, flat_index: int) -> int:
    """The sample that holds element `flat_index` of the concatenated per-sample arrays."""
    return int(np.searchsorted(np.cumsum(counts), flat_index, side="right"))


def read_shd_events(
    path: str | os.PathLike,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Read one SHD file and check it whole: (times per sample (s), units per sample, labels).

    Raises DataError naming the file and the first bad sample for: no samples, missing
    datasets, wrong shapes or dtypes, unequal counts, negative or non-finite spike times,
    negative units or labels. Ranges that depend on settings are in `check_shd_events`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SHD file {path} not found. {HOW_TO_GET}")
    raw_t, raw_u, raw_l = _h5_arrays(path)
    if raw_l.ndim != 1 or raw_l.dtype.kind not in "iu":
        raise DataError(
            f"{path}: labels must be a 1-D integer array, got {raw_l.shape} {raw_l.dtype}"
        )
    if raw_t.dtype.kind in "iub" or (
        raw_t.dtype == object and len(raw_t) and np.asarray(raw_t[0]).dtype.kind in "iub"
    ):
        kind = raw_t.dtype if raw_t.dtype != object else np.asarray(raw_t[0]).dtype
        raise DataError(
            f"{path}: spikes/times has integer dtype {kind}; SHD stores spike times as "
            "floating-point seconds, and integer times (steps? milliseconds?) cannot be binned "
            "without knowing their unit: convert them to float seconds"
        )
    times = _per_sample(path, raw_t, "spikes/times", "f")
    units = [u.astype(np.int64) for u in _per_sample(path, raw_u, "spikes/units", "iu")]
    if not (len(times) == len(units) == len(raw_l)) or not len(raw_l):
        raise DataError(
            f"{path}: spikes/times ({len(times)}), spikes/units ({len(units)}) and labels "
            f"({len(raw_l)}) must have the same, non-zero number of samples. {HOW_TO_GET}"
        )
    counts_t = np.array([len(t) for t in times])
    counts_u = np.array([len(u) for u in units])
    if np.any(counts_t != counts_u):
        i = int(np.flatnonzero(counts_t != counts_u)[0])
        raise DataError(f"{path}: sample {i} has {counts_t[i]} spike times but {counts_u[i]} units")
    flat_t, flat_u = np.concatenate(times), np.concatenate(units)
    bad_t = ~np.isfinite(flat_t) | (flat_t < 0)
    if bad_t.any():
        k = int(np.flatnonzero(bad_t)[0])
        raise DataError(
            f"{path}: sample {_first_sample(counts_t, k)}: spike time {float(flat_t[k])} is not "
            "valid; "
            "times must be finite and >= 0 (seconds)"
        )
    if (flat_u < 0).any():
        k = int(np.flatnonzero(flat_u < 0)[0])
        raise DataError(f"{path}: sample {_first_sample(counts_t, k)}: unit {flat_u[k]} is < 0")
    labels = raw_l.astype(np.int64)
    if (labels < 0).any():
        i = int(np.flatnonzero(labels < 0)[0])
        raise DataError(f"{path}: sample {i}: label {labels[i]} is < 0")
    return times, units, labels


def check_shd_events(
    path: str | os.PathLike,
    times: Sequence[np.ndarray],
    units: Sequence[np.ndarray],
    labels: np.ndarray,
    nb_units: int,
    nb_classes: int,
    nb_steps: int,
    dt: float,
    allow_silent: bool = False,
) -> dict[str, int]:
    """Check events read by `read_shd_events` against the network's settings; count drops.

    Units must be < nb_units and labels < nb_classes (DataError naming the first bad sample).
    Spikes at or after nb_steps * dt are outside the input and dropped: they are counted;
    a sample left with no spike is a DataError unless `allow_silent`. Returns the counts.
    """
    counts = np.array([len(t) for t in times], dtype=np.int64)
    flat_u = np.concatenate(list(units)) if len(units) else np.zeros(0, np.int64)
    if (flat_u >= nb_units).any():
        k = int(np.flatnonzero(flat_u >= nb_units)[0])
        raise DataError(
            f"{path}: sample {_first_sample(counts, k)}: unit index {flat_u[k]} is out of range "
            f"for dataset.nb_units={nb_units} (valid: 0..{nb_units - 1})"
        )
    labels = np.asarray(labels)
    if (labels >= nb_classes).any():
        i = int(np.flatnonzero(labels >= nb_classes)[0])
        raise DataError(
            f"{path}: sample {i}: label {labels[i]} is out of range for "
            f"dataset.nb_classes={nb_classes} (valid: 0..{nb_classes - 1})"
        )
    flat_t = _concat_times(times)
    late = scaled_times(flat_t, dt) >= nb_steps  # the rule of `bin_spikes`
    sample = np.repeat(np.arange(len(counts)), counts)
    kept = np.bincount(sample[~late], minlength=len(counts))
    silent = np.flatnonzero(kept == 0)
    report = {
        "samples": len(counts),
        "spikes": int(counts.sum()),
        "spikes_beyond_duration": int(late.sum()),
        "samples_with_spikes_beyond_duration": int(np.unique(sample[late]).size),
        "silent_samples": int(silent.size),
    }
    if silent.size and not allow_silent:
        i = int(silent[0])
        raise DataError(
            f"{path}: {silent.size} sample(s) have no spike within the {nb_steps} x {dt} s the "
            f"network sees (first: sample {i}, {counts[i]} spikes, all at or after "
            f"{nb_steps * dt:g} s); set dataset.allow_silent_samples=true to train on them"
        )
    return report


def _concat_times(times_list: Sequence[np.ndarray]) -> np.ndarray:
    """All spike times in one array, in their stored float dtype (lists become float64)."""
    arrays = [np.asarray(t) for t in times_list]
    arrays = [a if a.dtype.kind == "f" else a.astype(np.float64) for a in arrays]
    if not arrays:
        return np.zeros(0)
    return np.concatenate([a.ravel() for a in arrays])


def scaled_times(times: np.ndarray, dt: float) -> np.ndarray:
    """float32(times * (1/dt)) with the product in the dtype of `times`: the time in steps.

    As stork's `HDF5Dataset` (time_scale / time_step = 1/dt); a spike's step is the
    truncation of this value, and values >= nb_steps lie outside the input.
    """
    times = np.asarray(times)
    if times.dtype.kind != "f":
        times = times.astype(np.float64)
    scale = float(1.0 / float(dt))  # a Python float keeps float16/float32 times in their dtype
    return (times * scale).astype(np.float32)


def bin_spikes(
    times_list: Sequence[np.ndarray],
    units_list: Sequence[np.ndarray],
    nb_steps: int = 350,
    dt: float = 2e-3,
    nb_units: int = SHD_UNITS,
    sparse: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Bin ragged spike events into a binary (samples, nb_steps, nb_units) raster.

    Dense tensor, or a coalesced sparse COO tensor when `sparse`. One scatter for all samples.
    """
    check_positive("dataset.nb_steps", nb_steps, integer=True)
    check_positive("dataset.dt", dt)
    check_positive("dataset.nb_units", nb_units, integer=True)
    nb_steps, nb_units, n = int(nb_steps), int(nb_units), len(times_list)
    counts = np.fromiter((len(t) for t in times_list), dtype=np.int64, count=n)
    times = _concat_times(times_list)
    units = np.concatenate([np.asarray(u).ravel() for u in units_list] or [[]]).astype(np.int64)
    if len(units) != len(times):
        raise ValueError(f"{len(times)} spike times but {len(units)} unit indices")
    if times.size and not np.all(np.isfinite(times) & (times >= 0)):
        raise ValueError("spike times must be finite and >= 0 (seconds)")
    if units.size and (units.min() < 0 or units.max() >= nb_units):
        raise ValueError(
            f"unit index {int(units.max())} out of range for dataset.nb_units={nb_units} "
            f"(valid: 0..{nb_units - 1}); SHD has {SHD_UNITS} input units"
        )
    sample = np.repeat(np.arange(n, dtype=np.int64), counts)
    scaled = scaled_times(times, dt)
    keep = scaled < nb_steps
    step = scaled[keep].astype(np.int64)  # truncation (scaled >= 0)
    flat = (sample[keep] * nb_steps + step) * nb_units + units[keep]
    shape = (n, nb_steps, nb_units)
    if sparse:
        # sort and merge duplicates -> binary and coalesced (np.unique is far slower here)
        flat = np.sort(flat)
        first = np.ones(len(flat), dtype=bool)
        np.not_equal(flat[1:], flat[:-1], out=first[1:])
        flat = flat[first]
        sample_step, unit = np.divmod(flat, nb_units)
        idx = torch.from_numpy(np.stack([*np.divmod(sample_step, nb_steps), unit]))
        values = torch.ones(idx.shape[1], dtype=dtype)
        # indices are unique, sorted and in range by construction
        return torch.sparse_coo_tensor(
            idx, values, shape, check_invariants=False, is_coalesced=True
        )
    raster = torch.zeros(shape, dtype=dtype)
    raster.view(-1)[torch.from_numpy(flat)] = 1
    return raster


def load_shd(
    path_or_datadir: str | os.PathLike,
    split: str = "train",
    nb_steps: int = 350,
    dt: float = 2e-3,
    nb_units: int = SHD_UNITS,
    sparse: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SHD as (spikes (samples, nb_steps, nb_units), labels int64); defaults 350 x 2 ms = 0.7 s.

    `path_or_datadir` is an .h5 file or a folder holding shd_<split>.h5. Dense float32 rasters
    of the whole training set take ~8 GB; use `sparse=True` (or a smaller dtype) to save memory.
    """
    path = _file_for(path_or_datadir, split)
    times, units, labels = read_shd_events(path)
    try:
        spikes = bin_spikes(times, units, nb_steps, dt, nb_units, sparse, dtype)
    except ValueError as err:
        raise ValueError(f"{path}: {err}. {HOW_TO_GET}") from err
    return spikes, torch.from_numpy(labels)


def split_validation(
    x: torch.Tensor, y: torch.Tensor, fraction: float = 0.1, seed: int = 1
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Hold out a seeded share of the training data for validation: dict(train=..., valid=...).

    As the original: the samples are permuted (here by `default_rng(seed)`), the first
    int((1 - fraction) * N) of the permutation train, the rest validate.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(f"dataset.valid_fraction={fraction!r} is not valid; it must be in (0, 1)")
    n = int(y.shape[0])
    if x.shape[0] != n:
        raise ValueError(f"x has {x.shape[0]} samples but y has {n}")
    order = torch.from_numpy(np.random.default_rng(_check_seed(seed)).permutation(n))
    n_train = int((1.0 - fraction) * n)
    parts = {"train": order[:n_train], "valid": order[n_train:]}
    return {k: (x.index_select(0, idx), y.index_select(0, idx)) for k, idx in parts.items()}


# ----------------------------------------------------------------------------- download


def _decompress_atomic(fname: str, action: str, pup: object) -> str:
    """pooch processor: gunzip <x>.gz to <x> via a temporary file, so no half-written file stays."""
    out = fname[: -len(".gz")] if fname.endswith(".gz") else fname + ".decomp"
    if action in ("download", "update") or not os.path.exists(out):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), suffix=".part")
        try:
            with os.fdopen(fd, "wb") as dst, gzip.open(fname, "rb") as src:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, out)
        except (OSError, EOFError) as err:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise ValueError(f"could not decompress {fname}: {err}. {HOW_TO_GET}") from err
    return out


def _parse_md5sums(path: str) -> dict[str, str]:
    """`<md5>  <name>` lines -> {name: md5}; a leading '*' or './' on names is dropped."""
    table = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and len(parts[0]) == 32:
                name = parts[1].lstrip("*")
                table[name.removeprefix("./")] = parts[0].lower()
    return table


def fetch_shd(
    cache_dir: str | os.PathLike | None = None, base_url: str = SHD_URL
) -> dict[str, Path]:
    """Download SHD into `cache_dir`, check each .gz against the site's md5sums.txt, gunzip.

    Returns dict(train=path, test=path) of the .h5 files. Files already cached and matching
    their checksum are not downloaded again. `cache_dir` defaults to pooch's OS cache folder.
    """
    pooch = _pooch()
    cache = Path(cache_dir) if cache_dir is not None else Path(pooch.os_cache("sgtheory")) / "shd"
    cache.mkdir(parents=True, exist_ok=True)
    base_url = base_url.rstrip("/")
    try:
        sums_path = pooch.retrieve(
            f"{base_url}/{MD5_FILE}", known_hash=None, fname=MD5_FILE, path=cache
        )
    except OSError as err:  # network errors from requests are OSErrors too
        raise ConnectionError(
            f"could not download {base_url}/{MD5_FILE} into {cache}: {err}. {HOW_TO_GET}"
        ) from err
    sums = _parse_md5sums(sums_path)
    paths = {}
    for split, name in SHD_FILES.items():
        gz = name + ".gz"
        if gz not in sums:
            os.remove(sums_path)  # likely an error page; fetch it again next time
            raise ValueError(
                f"{base_url}/{MD5_FILE} has no checksum for {gz}; cannot verify it. {HOW_TO_GET}"
            )
        url = f"{base_url}/{gz}"
        try:
            out = pooch.retrieve(
                url,
                known_hash=f"md5:{sums[gz]}",
                fname=gz,
                path=cache,
                processor=_decompress_atomic,
            )
        except ValueError as err:
            if "hash" not in str(err).lower():
                raise
            raise ValueError(
                f"checksum mismatch for {url}: its md5 differs from {sums[gz]} listed in "
                f"{base_url}/{MD5_FILE}; the download was deleted. Retry, or get the file by "
                f"hand. Details: {err}"
            ) from err
        except OSError as err:
            raise ConnectionError(
                f"could not download {url} into {cache}: {err}. {HOW_TO_GET}"
            ) from err
        paths[split] = Path(out)
    return paths


def resolve_shd(
    datadir: str | os.PathLike | None,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    base_url: str = SHD_URL,
) -> dict[str, Path]:
    """Find the SHD files: in `datadir` if both are there, else download if allowed, else raise.

    Returns dict(train=path, test=path).
    """
    if datadir is not None:
        folder = Path(datadir).expanduser()
        found = {split: folder / name for split, name in SHD_FILES.items()}
        if all(p.is_file() for p in found.values()):
            return found
        missing = [p.name for p in found.values() if not p.is_file()]
        where = f"dataset.datadir={str(folder)!r} lacks {', '.join(missing)}"
    else:
        where = "dataset.datadir=null (not set)"
    if download:
        return fetch_shd(cache_dir, base_url=base_url)
    raise FileNotFoundError(
        f"{where}: SHD not found; expected {' and '.join(SHD_FILES.values())} in that folder. "
        f"{HOW_TO_GET}"
    )
