"""Dataset readers, the multi-domain mix, the uint8 cache and the batched loader, on data the tests write.

Every on-disk format is written here from its specification (IDX, ImageFolder dir and tar,
torchvision's CIFAR pickles and SVHN .mat files, an ImageNet-style tree) and read back; the
expected tensors are the arrays the test wrote. Real shared data is checked against the counts in
its manifest when present.
"""
from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mnzoo.data import (DOMAINS, BatchAugment, TensorLoader, build_dataset, create_imagefolder_loader,
                        domain_transform, load_source, multidomain_classes, parse_source, read_idx, read_idx_split,
                        read_image_folder, read_torchvision)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FASHION = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- writers (from the format specs)
def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    """IDX: 0x00 0x00, type code (0x08 = ubyte), ndim, big-endian int32 dims, then the data."""
    payload = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">i", d) for d in arr.shape)
    payload += arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist_folder(root: Path, n_train: int = 12, n_test: int = 6, seed: int = 0, gz: bool = True):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        ext = ".gz" if gz else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz)
        out[prefix] = (images, labels)
    return out


def write_image_folder(root: Path, classes=("b_cls", "a_cls"), per_class: int = 11, size: int = 32, seed: int = 1):
    """PNG ImageFolder; returns {class: [arrays in natural file order]}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = {}
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        out[c] = []
        for i in range(per_class):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
            out[c].append(arr)
    return out


def make_tar(folder: Path, tar_path: Path) -> Path:
    with tarfile.open(tar_path, "w") as tf:
        for c in sorted(os.listdir(folder)):
            tf.add(folder / c, arcname=f"train/{c}")  # an extra leading folder, as in some tars
    return tar_path


# ---------------------------------------------------------------- IDX
def test_idx_roundtrip_gz_and_raw(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", arr, gz=True)
    write_idx(tmp_path / "a", arr, gz=False)
    assert torch.equal(read_idx(tmp_path / "a.gz"), torch.from_numpy(arr))
    assert torch.equal(read_idx(tmp_path / "a"), torch.from_numpy(arr))


def test_idx_bad_files_raise(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    arr = np.zeros((3, 4), np.uint8)
    write_idx(tmp_path / "short", arr, gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-2])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing.gz")


def test_idx_split_plain_and_torchvision_layout(tmp_path):
    written = write_mnist_folder(tmp_path / "plain")
    images, labels, classes = read_idx_split(tmp_path / "plain", "test")
    assert images.shape == (6, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(images[:, 0], torch.from_numpy(written["t10k"][0]))
    assert labels.tolist() == written["t10k"][1].tolist()
    # torchvision's layout: <root>/FashionMNIST/raw/*-ubyte (uncompressed)
    written = write_mnist_folder(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False, seed=3)
    images, labels, _ = read_torchvision("fashion_mnist", tmp_path / "tv", "train")
    assert torch.equal(images[:, 0], torch.from_numpy(written["train"][0]))
    with pytest.raises(ValueError, match="split"):
        read_idx_split(tmp_path / "plain", "val")


# ---------------------------------------------------------------- ImageFolder dir / tar
def test_image_folder_dir_and_tar(tmp_path):
    written = write_image_folder(tmp_path / "folder")
    expected = np.stack(written["a_cls"] + written["b_cls"]).transpose(0, 3, 1, 2)  # alphabetical, natural order
    for src in (tmp_path / "folder", make_tar(tmp_path / "folder", tmp_path / "f.tar")):
        images, labels, classes = read_image_folder(src)
        assert classes == ["a_cls", "b_cls"]
        assert labels.tolist() == [0] * 11 + [1] * 11
        assert torch.equal(images, torch.from_numpy(expected))  # 10.png after 9.png, PNG is lossless


def test_image_folder_errors(tmp_path):
    from PIL import Image

    write_image_folder(tmp_path / "mixed", classes=("a",), per_class=2)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "mixed" / "a" / "odd.png")
    with pytest.raises(ValueError, match="differ in size"):
        read_image_folder(tmp_path / "mixed")
    with pytest.raises(FileNotFoundError):
        read_image_folder(tmp_path / "nothing.tar")


# ---------------------------------------------------------------- torchvision on-disk formats
def _write_cifar_root(root: Path, hundred: bool, n_per_file: int = 4, seed: int = 2):
    rng = np.random.default_rng(seed)
    if hundred:
        folder, files, key, meta, names = root / "cifar-100-python", ["train", "test"], "fine_labels", "meta", \
            "fine_label_names"
        n_classes = 100
    else:
        folder, files, key, meta, names = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + \
            ["test_batch"], "labels", "batches.meta", "label_names"
        n_classes = 10
    folder.mkdir(parents=True)
    out = {}
    for f in files:
        data = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = list(rng.integers(0, n_classes, n_per_file))
        with open(folder / f, "wb") as fh:
            pickle.dump({"data": data, key: labels, "filenames": [f"{i}.png" for i in range(n_per_file)]}, fh)
        out[f] = (data.reshape(-1, 3, 32, 32), labels)
    with open(folder / meta, "wb") as fh:
        pickle.dump({names: [f"class{i}" for i in range(n_classes)]}, fh)
    return out


def test_torchvision_cifar10_and_100_roots(tmp_path):
    written = _write_cifar_root(tmp_path / "c10", hundred=False)
    images, labels, classes = read_torchvision("cifar10", tmp_path / "c10", "train")
    assert images.shape == (20, 3, 32, 32) and len(classes) == 10
    assert torch.equal(images[4:8], torch.from_numpy(written["data_batch_2"][0]))
    assert labels[4:8].tolist() == written["data_batch_2"][1]
    test = build_dataset(["cifar10=" + str(tmp_path / "c10") + "@test"], use_cache=False)
    assert torch.equal(test.images, torch.from_numpy(written["test_batch"][0]))
    written = _write_cifar_root(tmp_path / "c100", hundred=True)
    ds = build_dataset([f"cifar100={tmp_path / 'c100'}@test"], use_cache=False)
    assert ds.num_classes == 100 and torch.equal(ds.images, torch.from_numpy(written["test"][0]))
    assert ds.labels.tolist() == written["test"][1]


def test_torchvision_svhn_root(tmp_path):
    savemat = pytest.importorskip("scipy.io", reason="SVHN's .mat files need scipy (the [train] extra)").savemat

    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (32, 32, 3, 7), dtype=np.uint8)  # SVHN's (H, W, C, N) layout
    y = np.array([[10], [1], [2], [3], [10], [5], [9]], dtype=np.uint8)  # 10 means digit 0
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    images, labels, _ = read_torchvision("svhn", tmp_path, "test")
    assert torch.equal(images, torch.from_numpy(x.transpose(3, 2, 0, 1).copy()))
    assert labels.tolist() == [0, 1, 2, 3, 0, 5, 9]
    with pytest.raises(FileNotFoundError, match="download"):
        read_torchvision("svhn", tmp_path, "train")


# ---------------------------------------------------------------- ImageNet-style ImageFolder
def test_imagefolder_loader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(5)
    for split in ("train", "val"):
        for c in ("n01", "n02"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / c / f"{i}.jpg")
    loader = create_imagefolder_loader(tmp_path, "val", is_training=False, batch_size=4, input_size=32, workers=0)
    batches = list(loader)
    assert len(loader.data) == 6 and [b[0].shape for b in batches] == [(4, 3, 32, 32), (2, 3, 32, 32)]
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 0, 0, 1, 1, 1]
    train = create_imagefolder_loader(tmp_path, "train", is_training=True, batch_size=2, input_size=32, workers=0)
    x, y, d = next(iter(train))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    with pytest.raises(FileNotFoundError):
        create_imagefolder_loader(tmp_path / "nope", "val", False, 2)


# ---------------------------------------------------------------- sources, cache, multi-domain
def test_parse_source():
    s = parse_source("mnist=/data/mnist@test")
    assert (s.domain, s.path, s.split) == ("mnist", "/data/mnist", "test")
    assert parse_source("cifar10=/x/a@b.tar").path == "/x/a@b.tar"  # '@' not followed by a split is kept
    with pytest.raises(ValueError, match="unknown domain 'kmnist'"):
        parse_source("kmnist=/x")
    with pytest.raises(ValueError, match="domain=path"):
        parse_source("/just/a/path")


def test_cache_reused_and_invalidated(tmp_path):
    write_image_folder(tmp_path / "f", classes=("a", "b"), per_class=3)
    tar = make_tar(tmp_path / "f", tmp_path / "f.tar")
    cache = tmp_path / "cache"
    first = load_source(f"cifar10={tar}", cache_dir=cache)
    files = list(cache.glob("cifar10-train-*.pt"))
    assert len(files) == 1
    again = load_source(f"cifar10={tar}", cache_dir=cache)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    # the cache is what is read: poison it and the poison comes back
    blob = torch.load(files[0], weights_only=True)
    blob["labels"] = blob["labels"] * 0 + 1
    torch.save(blob, files[0])
    assert load_source(f"cifar10={tar}", cache_dir=cache)[1].tolist() == [1] * 6
    # a changed source file gets a new cache entry
    os.utime(tar, ns=(1, 1))
    assert load_source(f"cifar10={tar}", cache_dir=cache)[1].tolist() == [0, 0, 0, 1, 1, 1]
    assert len(list(cache.glob("cifar10-train-*.pt"))) == 2


def test_multidomain_mix(tmp_path):
    mn = write_mnist_folder(tmp_path / "mnist", n_train=8, n_test=4)
    fa = write_mnist_folder(tmp_path / "fashion", n_train=6, n_test=4, seed=9)
    cf = write_image_folder(tmp_path / "cifar", classes=[f"c{i}" for i in range(10)], per_class=1)
    ds = build_dataset([f"mnist={tmp_path / 'mnist'}", f"cifar10={tmp_path / 'cifar'}",
                        f"fashion_mnist={tmp_path / 'fashion'}@train"], multidomain=True, use_cache=False)
    assert ds.num_classes == 40 and len(ds) == 8 + 10 + 6 and ds.images.shape[1:] == (3, 32, 32)
    assert ds.domain_names == ["mnist", "cifar10", "fashion_mnist"]
    # labels: mnist 0-9, cifar10 10-19, fashion 30-39
    assert ds.labels[:8].tolist() == mn["train"][1].tolist()
    assert ds.labels[8:18].tolist() == list(range(10, 20))
    assert ds.labels[18:].tolist() == (fa["train"][1] + 30).tolist()
    # grey -> 3 identical channels; 28 -> 32 by 2 px of zeros
    m0 = ds.images[0]
    assert torch.equal(m0[0], m0[1]) and torch.equal(m0[1], m0[2])
    assert torch.equal(m0[0, 2:30, 2:30], torch.from_numpy(mn["train"][0][0]))
    assert m0[:, :2].sum() == 0 and m0[:, :, 30:].sum() == 0
    assert torch.equal(ds.images[8], torch.from_numpy(cf["c0"][0].transpose(2, 0, 1)))
    assert multidomain_classes()[10] == "cifar10/airplane" and multidomain_classes()[39] == "fashion_mnist/Ankle boot"
    # per-domain normalisation, against a literal per-sample computation
    x, y, d = next(iter(TensorLoader(ds, batch_size=len(ds))))
    for n in (0, 9, 20):
        dom = DOMAINS[ds.domain_names[int(d[n])]]
        mean = torch.tensor(dom.mean).expand(3) if len(dom.mean) == 1 else torch.tensor(dom.mean)
        std = torch.tensor(dom.std).expand(3) if len(dom.std) == 1 else torch.tensor(dom.std)
        want = (ds.images[n].double() / 255 - mean.double()[:, None, None]) / std.double()[:, None, None]
        torch.testing.assert_close(x[n].double(), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="repeat a domain"):
        build_dataset([f"mnist={tmp_path / 'mnist'}", f"mnist={tmp_path / 'mnist'}"], multidomain=True)
    with pytest.raises(ValueError, match="single-domain"):
        build_dataset([f"mnist={tmp_path / 'mnist'}", f"cifar10={tmp_path / 'cifar'}"])



def test_domain_transform_one_image_literal(tmp_path):
    """One PIL image preprocessed as its domain is in training, against the paper's §4.1 recipe written
    out: grey 28x28 -> 2 px of black on each side, 3 identical channels, then the domain's mean/std."""
    from PIL import Image

    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    want = np.zeros((32, 32))
    want[2:30, 2:30] = grey / 255.0
    want = (want - 0.2860) / 0.3530  # Fashion-MNIST's train-set statistics
    got = domain_transform("fashion_mnist")(Image.fromarray(grey))
    assert got.shape == (3, 32, 32) and got.dtype == torch.float32
    for c in range(3):
        np.testing.assert_allclose(got[c].numpy(), want, atol=1e-5)
    # single-domain: native shape and channels, no padding
    got1 = domain_transform("mnist", multidomain=False)(Image.fromarray(grey))
    np.testing.assert_allclose(got1[0].numpy(), (grey / 255.0 - 0.1307) / 0.3081, atol=1e-5)
    assert got1.shape == (1, 28, 28)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    got3 = domain_transform("cifar10")(Image.fromarray(rgb))
    mean, std = np.array(DOMAINS["cifar10"].mean), np.array(DOMAINS["cifar10"].std)
    np.testing.assert_allclose(got3.permute(1, 2, 0).numpy(), (rgb / 255.0 - mean) / std, atol=1e-5)
    with pytest.raises(ValueError, match="unknown domain 'kmnist'"):
        domain_transform("kmnist")
    with pytest.raises(ValueError, match="not part of the multi-domain"):
        domain_transform("cifar100")
    with pytest.raises(ValueError, match="28x28 or 32x32, got 20x20"):
        domain_transform("mnist")(Image.fromarray(grey[:20, :20]))


# ---------------------------------------------------------------- augmentation and loader
def test_batch_augment_matches_literal_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 6), dtype=torch.uint8, generator=g)
    aug = BatchAugment(pad=2, hflip=True)
    dy, dx, flip = aug.sample(16, g)
    assert dy.min() >= 0 and dy.max() <= 4 and 0 < flip.sum() < 16
    out = aug.apply(x, dy, dx, flip)
    for n in range(16):
        padded = np.pad(x[n].numpy(), ((0, 0), (2, 2), (2, 2)))
        want = padded[:, dy[n]:dy[n] + 8, dx[n]:dx[n] + 6]
        if flip[n]:
            want = want[:, :, ::-1]
        assert np.array_equal(out[n].numpy(), want)


def _tiny(n=50):
    from mnzoo.data import ImageTensors

    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return ImageTensors(images, torch.arange(n) % 10, torch.zeros(n, dtype=torch.long), ["mnist"],
                        torch.zeros(1, 1), torch.full((1, 1), 1 / 255), 10)


def test_loader_epochs_seeds_and_shards():
    data = _tiny()
    loader = TensorLoader(data, batch_size=8, shuffle=True, seed=3)
    ids = lambda ld: [b[0][:, 0, 0, 0].long().tolist() for b in ld]  # noqa: E731 (pixel value = index)
    e0 = ids(loader)
    assert len(e0) == 6 and len({i for b in e0 for i in b}) == 48  # drop_last, no repeats
    assert ids(loader) == e0  # same epoch, same batches
    loader.set_epoch(1)
    assert ids(loader) != e0
    loader.set_epoch(0)
    # two processes: their slices of each global batch concatenate to the one-process batch
    r0 = TensorLoader(data, 8, shuffle=True, seed=3, rank=0, world_size=2)
    r1 = TensorLoader(data, 8, shuffle=True, seed=3, rank=1, world_size=2)
    assert [a + b for a, b in zip(ids(r0), ids(r1), strict=True)] == e0
    # eval sharding covers every sample exactly once, in order
    ev = [TensorLoader(data, 8, rank=r, world_size=2) for r in (0, 1)]
    assert sum(ids(ev[0]) + ids(ev[1]), []) == list(range(50))
    with pytest.raises(ValueError, match="divisible"):
        TensorLoader(data, 7, world_size=2)


def test_loader_is_fast_enough():
    """Augment + normalise a CIFAR-sized batch in well under 5 % of a ~0.4 s ResNet20 step."""
    import time

    from mnzoo.data import ImageTensors

    n = 4096
    data = ImageTensors(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.zeros(n, dtype=torch.long),
                        torch.zeros(n, dtype=torch.long), ["cifar10"], torch.full((1, 3), 0.5),
                        torch.full((1, 3), 0.25), 10)
    loader = TensorLoader(data, 128, shuffle=True, augment=BatchAugment(4, True))
    t = time.perf_counter()
    batches = sum(1 for _ in loader)
    per_batch = (time.perf_counter() - t) / batches
    assert per_batch < 0.02, f"{per_batch * 1e3:.1f} ms per batch"


# ---------------------------------------------------------------- the real shared data (when present)
@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="shared data not present")
def test_shared_mnist_and_cifar_match_manifest(tmp_path):
    manifest = json.loads((SHARED / "manifest.json").read_text())
    mn = build_dataset([f"mnist={SHARED / 'mnist'}@train"], cache_dir=tmp_path)
    assert len(mn) == 60000 and mn.images.shape[1:] == (1, 28, 28)
    assert torch.bincount(mn.labels).tolist() == manifest["mnist"]["train_per_class"]
    cf = build_dataset([f"cifar10={SHARED / 'cifar10' / 'test-lossless-1k.tar'}"], cache_dir=tmp_path)
    assert torch.bincount(cf.labels).tolist() == manifest["cifar10_test_lossless_1k"]["per_class"]


@pytest.mark.skipif(not FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_package(tmp_path):
    ds = build_dataset([f"fashion_mnist={FASHION}@test"], cache_dir=tmp_path)
    assert len(ds) == 10000 and torch.bincount(ds.labels).tolist() == [1000] * 10
