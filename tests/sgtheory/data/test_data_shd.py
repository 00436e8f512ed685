"""SHD: reader round trip, corrupt and missing files, checked download from a loopback server."""

import functools
import gzip
import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from sgtheory.data import (
    bin_spikes,
    fetch_shd,
    load_shd,
    resolve_shd,
    split_validation,
    write_shd_like,
)
from sgtheory.data.shd import check_shd_events, read_shd_events
from sgtheory.errors import ConfigError, DataError


def random_events(seed: int, n: int = 6, nb_units: int = 700, t_max: float = 0.9):
    """Ragged per-sample spike times (s, float32 like the official files) and units."""
    rng = np.random.default_rng(seed)
    times, units = [], []
    for _ in range(n):
        k = int(rng.integers(0, 300))
        times.append(np.sort(rng.random(k) * t_max).astype(np.float32))
        units.append(rng.integers(0, nb_units, k).astype(np.uint16))
    labels = rng.integers(0, 20, n)
    return times, units, labels


def write_pair(folder: Path, seed: int = 0) -> dict:
    """shd_train.h5 and shd_test.h5 in `folder`; returns the events written per split."""
    events = {}
    for i, split in enumerate(("train", "test")):
        ev = random_events(seed + i)
        write_shd_like(folder / f"shd_{split}.h5", *ev)
        events[split] = ev
    return events


def test_round_trip_spike_lands_in_the_originals_step(tmp_path):
    """Step = trunc(t * 500) with the product in float32, the stored dtype (dt = 2 ms)."""
    times, units, labels = random_events(1)
    path = write_shd_like(tmp_path / "f.h5", times, units, labels, speakers=[0] * len(labels))
    x, y = load_shd(path, nb_steps=350, dt=2e-3)
    assert x.shape == (6, 350, 700) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == list(labels)
    expected = set()
    for s, (ts, us) in enumerate(zip(times, units)):
        for t, u in zip(ts.tolist(), us.tolist()):
            b = int(np.float32(t) * np.float32(500.0))
            if b < 350:
                expected.add((s, b, u))
    assert expected, "test data should have spikes inside the window"
    got = {tuple(i) for i in x.nonzero().tolist()}
    assert got == expected  # every kept spike is there, nothing else, binary
    assert set(torch.unique(x).tolist()) == {0.0, 1.0}


def test_bin_edges_and_late_spikes_exact():
    # dt = 0.25 s and these times are exact in binary: no round-off questions
    times = [np.array([0.0, 0.25, 0.5, 0.74, 0.75, 0.99, 1.0, 1.5])]
    units = [np.array([0, 1, 2, 3, 3, 4, 5, 6])]
    x = bin_spikes(times, units, nb_steps=4, dt=0.25, nb_units=7)
    got = {tuple(i) for i in x[0].nonzero().tolist()}
    assert got == {(0, 0), (1, 1), (2, 2), (2, 3), (3, 3), (3, 4)}  # 1.0 and 1.5 s dropped


def test_float16_times_are_scaled_in_float16_like_the_original(tmp_path):
    """float16(0.19995) = 0.199951171875; 500 t = 99.9755859375, which float16 (spacing
    0.0625 in [64, 128)) rounds to 100.0: step 100, where floor(t / dt) would give 99.
    float16(0.2999) = 0.2998046875; 500 t = 149.90234375 rounds to 149.875: step 149."""
    t16 = [np.array([0.19995, 0.2999], dtype=np.float16)]
    x = bin_spikes(t16, [np.array([0, 1])], nb_steps=350, dt=2e-3, nb_units=2)
    assert {tuple(i) for i in x[0].nonzero().tolist()} == {(100, 0), (149, 1)}
    path = write_raw(tmp_path / "f16.h5", t16, [[0, 1]], np.arange(1), vlen=(np.float16, np.uint16))
    times, _, _ = read_shd_events(path)
    assert times[0].dtype == np.float16  # kept as stored, so the rule above applies
    loaded, _ = load_shd(path, nb_steps=350, dt=2e-3, nb_units=2)
    assert torch.equal(loaded, x)


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.int64])
def test_integer_spike_times_are_refused(tmp_path, dtype):
    path = write_raw(
        tmp_path / "int.h5", [[0, 1], [2]], [[1, 2], [3]], np.arange(2), vlen=(dtype, np.uint16)
    )
    with pytest.raises(DataError, match="spikes/times has integer dtype .*floating-point seconds"):
        read_shd_events(path)


def test_repeated_spikes_in_one_bin_count_once():
    x = bin_spikes([np.array([0.1, 0.11, 0.12])], [np.array([2, 2, 2])], 10, 0.1, 3)
    assert x.sum() == 1 and x[0, 1, 2] == 1


def test_sparse_equals_dense_and_folder_loading(tmp_path):
    events = write_pair(tmp_path)
    dense, y = load_shd(tmp_path, split="test", nb_steps=100, dt=5e-3)
    sparse, ys = load_shd(tmp_path, split="test", nb_steps=100, dt=5e-3, sparse=True)
    assert sparse.is_sparse and sparse.is_coalesced()
    assert torch.equal(sparse.to_dense(), dense) and torch.equal(y, ys)
    assert y.tolist() == list(events["test"][2])
    with pytest.raises(ConfigError, match="dataset.split"):
        load_shd(tmp_path, split="valid")


def test_split_validation_seeded_ten_percent():
    x, y = torch.arange(50.0).reshape(50, 1, 1), torch.arange(50)
    parts = split_validation(x, y, fraction=0.1, seed=2)
    assert len(parts["train"][1]) == 45 and len(parts["valid"][1]) == 5
    # the original's rule: the first int(0.9 N) of the permutation train, the rest validate
    order = np.random.default_rng(2).permutation(50)
    assert parts["train"][1].tolist() == order[:45].tolist()
    assert parts["valid"][1].tolist() == order[45:].tolist()
    n = 8156  # the official training file: int(0.9 * 8156) = 7340 train, 816 valid
    sizes = split_validation(torch.zeros(n, 1), torch.arange(n), 0.1, seed=1)
    assert [len(sizes[k][1]) for k in ("train", "valid")] == [7340, 816]
    assert torch.equal(parts["valid"][1], split_validation(x, y, 0.1, seed=2)["valid"][1])
    assert not set(parts["valid"][1].tolist()) & set(parts["train"][1].tolist())


def test_random_bytes_are_rejected(tmp_path):
    path = tmp_path / "shd_train.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a readable SHD file.*zenkelab.org"):
        load_shd(path)


def test_truncated_file_is_rejected(tmp_path):
    path = write_shd_like(tmp_path / "shd_train.h5", *random_events(2))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_shd(path)


def test_missing_dataset_is_rejected(tmp_path):
    import h5py

    path = tmp_path / "shd_train.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="spikes/times, spikes/units"):
        load_shd(path)


def test_mismatched_lengths_are_rejected(tmp_path):
    import h5py

    times, units, labels = random_events(3)
    path = write_shd_like(tmp_path / "a.h5", times, units, labels)
    with h5py.File(path, "a") as f:  # one label too many
        del f["labels"]
        f.create_dataset("labels", data=np.append(labels, 1).astype(np.uint16))
    with pytest.raises(DataError, match="same, non-zero number of samples"):
        load_shd(path)
    units[2] = units[2][:-1]
    path = write_shd_like(tmp_path / "b.h5", times, units, labels)
    with pytest.raises(ValueError, match="sample 2 has"):
        load_shd(path)


def test_unit_index_out_of_range_is_rejected(tmp_path):
    path = write_shd_like(tmp_path / "c.h5", [[0.1]], [[699]], [0])
    assert load_shd(path)[0].sum() == 1
    with pytest.raises(ValueError, match="unit index 699 out of range for dataset.nb_units=100"):
        load_shd(path, nb_units=100)


def test_missing_files_say_what_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="shd_train.h5.*zenkelab.org/datasets"):
        load_shd(tmp_path)
    for datadir in (None, tmp_path):
        with pytest.raises(FileNotFoundError) as err:
            resolve_shd(datadir, download=False)
        msg = str(err.value)
        for needle in (
            "shd_train.h5",
            "shd_test.h5",
            "dataset.datadir",
            "dataset.download=true",
            "https://zenkelab.org/datasets",
        ):
            assert needle in msg
    (tmp_path / "shd_train.h5.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="gunzip"):
        load_shd(tmp_path)


def test_resolve_uses_datadir_when_complete(tmp_path):
    write_pair(tmp_path)
    assert resolve_shd(tmp_path, download=False) == {
        "train": tmp_path / "shd_train.h5",
        "test": tmp_path / "shd_test.h5",
    }


# ----------------------------------------------------------------------------- download


class Server:
    """Static files over HTTP on 127.0.0.1 (loopback only), recording requested paths."""

    def __init__(self, root: Path):
        self.requests: list[str] = []
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                log.append(self.path)

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A mock of the dataset site: gzipped files and md5sums.txt; yields (server, events, root)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "site"
    root.mkdir()
    events = write_pair(tmp_path / "orig")
    lines = []
    for name in ("shd_train.h5", "shd_test.h5"):
        with open(tmp_path / "orig" / name, "rb") as src, gzip.open(root / f"{name}.gz", "wb") as d:
            shutil.copyfileobj(src, d)
        md5 = hashlib.md5((root / f"{name}.gz").read_bytes()).hexdigest()
        lines.append(f"{md5}  {name}.gz")
    (root / "md5sums.txt").write_text("0" * 32 + "  ssc_train.h5.gz\n" + "\n".join(lines) + "\n")
    server = Server(root)
    yield server, events, root
    server.close()


def test_download_checks_and_decompresses(site, tmp_path):
    server, events, _ = site
    cache = tmp_path / "cache"
    paths = fetch_shd(cache, base_url=server.url)
    assert paths == {"train": cache / "shd_train.h5", "test": cache / "shd_test.h5"}
    for split in ("train", "test"):
        x, y = load_shd(paths[split], nb_steps=50, dt=1e-2)
        x0, y0 = load_shd(tmp_path / "orig" / f"shd_{split}.h5", nb_steps=50, dt=1e-2)
        assert torch.equal(x, x0) and torch.equal(y, y0)
        assert y.tolist() == list(events[split][2])
    assert not list(cache.glob("*.part"))
    n = len(server.requests)
    # cached and matching: nothing is downloaded again; resolve_shd goes the same way
    assert resolve_shd(None, download=True, cache_dir=cache, base_url=server.url) == paths
    assert len(server.requests) == n


def test_download_checksum_mismatch_is_clear(site, tmp_path):
    server, _, root = site
    (root / "md5sums.txt").write_text(
        "\n".join(f"{'f' * 32}  {name}.gz" for name in ("shd_train.h5", "shd_test.h5"))
    )
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="checksum mismatch for http.*shd_train.h5.gz"):
        fetch_shd(cache, base_url=server.url)
    assert not (cache / "shd_train.h5.gz").exists() and not (cache / "shd_train.h5").exists()


def test_download_without_listed_checksum_is_refused(site, tmp_path):
    server, _, root = site
    (root / "md5sums.txt").write_text("<html>not found</html>\n")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="no checksum for shd_train.h5.gz"):
        fetch_shd(cache, base_url=server.url)
    assert not (cache / "md5sums.txt").exists()  # a bad list is not kept


def test_unreachable_server_is_a_clear_connection_error(tmp_path):
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match="could not download.*md5sums.txt"):
        fetch_shd(tmp_path / "cache", base_url=f"http://127.0.0.1:{port}")


# ------------------------------------------------------------------ whole-file validation


def write_raw(path: Path, times, units, labels, vlen=(np.float32, np.uint16)) -> Path:
    """An SHD-layout file with arbitrary dtypes (None: leave the dataset out)."""
    import h5py

    with h5py.File(path, "w") as f:
        for key, data, dtype in (
            ("spikes/times", times, vlen[0]),
            ("spikes/units", units, vlen[1]),
        ):
            if data is None:
                continue
            if dtype is None:
                f.create_dataset(key, data=data)
                continue
            ds = f.create_dataset(key, (len(data),), dtype=h5py.vlen_dtype(dtype))
            for i, row in enumerate(data):
                ds[i] = np.asarray(row, dtype=dtype)
        if labels is not None:
            f.create_dataset("labels", data=labels)
    return path


GOOD_T, GOOD_U = [[0.1, 0.2], [0.3], [0.05]], [[1, 2], [3], [4]]


@pytest.mark.parametrize(
    "times,units,labels,vlen,message",
    [
        (GOOD_T, GOOD_U, np.arange(3), (np.float32, np.float32), "sample 0: spikes/units must be"),
        ([[0.1], [-0.5], [0.2]], [[1], [2], [3]], np.arange(3), None, "sample 1: spike time -0.5"),
        ([[0.1], [0.2], [np.nan]], [[1], [2], [3]], np.arange(3), None, "sample 2: spike time nan"),
        ([[0.1], [np.inf], [0.1]], [[1], [2], [3]], np.arange(3), None, "sample 1: spike time inf"),
        (GOOD_T, GOOD_U, np.array([0.0, 1.0, 2.0]), None, "labels must be a 1-D integer array"),
        (GOOD_T, GOOD_U, np.array([0, -1, 2]), None, "sample 1: label -1 is < 0"),
        ([], [], np.zeros(0, np.uint16), None, "same, non-zero number of samples"),
        (np.array([b"ab", b"cd", b"ef"]), GOOD_U, np.arange(3), "raw", "spikes/times must hold"),
    ],
)
def test_bad_contents_name_the_file_and_first_bad_sample(
    tmp_path, times, units, labels, vlen, message
):
    path = tmp_path / "shd_train.h5"
    if vlen == "raw":
        write_raw(path, times, units, labels, vlen=(None, np.uint16))
    else:
        write_raw(path, times, units, labels, vlen=vlen or (np.float64, np.int32))
    with pytest.raises(DataError) as err:
        read_shd_events(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\x89HDF\r\n\x1a\n" + b"\0" * 20])
def test_empty_or_stub_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "shd_test.h5"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"^{path} is not a readable SHD file \\(empty, not HDF5"):
        read_shd_events(path)


def test_wrong_keys_are_named(tmp_path):
    path = write_raw(tmp_path / "x.h5", GOOD_T, None, np.arange(3))
    with pytest.raises(DataError, match="lacks the dataset\\(s\\) spikes/units"):
        read_shd_events(path)


def test_ranges_that_depend_on_settings(tmp_path):
    path = tmp_path / "f.h5"
    times = [np.array([0.1, 0.2]), np.array([0.3]), np.array([0.05])]
    units = [np.array([1, 2]), np.array([700]), np.array([4])]
    with pytest.raises(
        DataError, match="sample 1: unit index 700 is out of range for dataset.nb_units=700"
    ):
        check_shd_events(path, times, units, np.array([0, 1, 2]), 700, 20, 350, 2e-3)
    units[1] = np.array([3])
    with pytest.raises(
        DataError, match="sample 2: label 20 is out of range for dataset.nb_classes=20"
    ):
        check_shd_events(path, times, units, np.array([0, 1, 20]), 700, 20, 350, 2e-3)


def test_spikes_beyond_the_duration_are_counted_and_silent_samples_refused(tmp_path):
    path = tmp_path / "f.h5"
    # window 10 x 0.1 s = 1 s; exact binary times 0.5, 0.75, 1.0 (dropped), 1.5 (dropped)
    times = [np.array([0.5, 1.0]), np.array([1.0, 1.5]), np.array([0.75])]
    units = [np.array([0, 1]), np.array([2, 3]), np.array([4])]
    labels = np.array([0, 1, 2])
    with pytest.raises(DataError) as err:
        check_shd_events(path, times, units, labels, 5, 3, 10, 0.1)
    message = str(err.value)
    assert "1 sample(s) have no spike" in message and "first: sample 1, 2 spikes" in message
    assert "dataset.allow_silent_samples=true" in message
    report = check_shd_events(path, times, units, labels, 5, 3, 10, 0.1, allow_silent=True)
    assert report == {
        "samples": 3,
        "spikes": 5,
        "spikes_beyond_duration": 3,
        "samples_with_spikes_beyond_duration": 2,
        "silent_samples": 1,
    }
    x = bin_spikes(times, units, 10, 0.1, 5)  # the same rule: 5 - 3 spikes land in the raster
    assert int(x.sum()) == 2
