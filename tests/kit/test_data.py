import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from labfolio.kit import data  # noqa: E402
from labfolio.kit.data import (  # noqa: E402
    ByteBatches,
    DatasetError,
    DatasetNotFoundError,
    channel_stats,
    epoch_batches,
    load_cifar_pickle,
    load_digits,
    load_image_dataset,
    load_jpeg_tree,
    load_text_bytes,
    normalize,
    random_crop_flip,
)

SHARED = Path("/work/shared/data")
CIFAR10_JPEG = SHARED / "cifar10-jpeg-q75.tar.xz"
SHAKESPEARE = SHARED / "tinyshakespeare.txt"


# --------------------------------------------------------------------------- fixtures


def write_jpeg_tree(root: Path, classes=("cat", "dog"), per_split=(4, 2), size=8) -> Path:
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_split):
        for index, label in enumerate(classes):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                # flat colours survive JPEG well, so the class is recoverable from the pixels
                pixels = np.full((size, size, 3), 40 + 150 * index, dtype=np.uint8)
                pixels[0, 0] = rng.integers(0, 255, 3)
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=95)
    return root


def fake_cifar10_batches(n_per_batch=6):
    """Files in the official CIFAR-10 python layout (dicts of numpy arrays), tiny."""
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    files = {"batches.meta": {b"label_names": [n.encode() for n in names], b"num_vis": 3072}}
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        files[batch] = {
            b"batch_label": batch.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n_per_batch)],
            b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{batch}_{i}.png".encode() for i in range(n_per_batch)],
        }
    return files


def write_tarball(path: Path, inner: str, files: dict, mode="w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, content in files.items():
            blob = pickle.dumps(content, protocol=4)
            info = tarfile.TarInfo(f"{inner}/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return path


def fake_cifar100_tarball(path: Path) -> Path:
    rng = np.random.default_rng(1)
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)]}
    files = {"meta": meta}
    for split, n in (("train", 10), ("test", 4)):
        fine = rng.integers(0, 100, n)
        files[split] = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                        "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist()}
    return write_tarball(path, "cifar-100-python", files)


# --------------------------------------------------------------------------- CIFAR pickles


def test_cifar10_pickle_tarball_loads_in_channel_first_layout(tmp_path):
    files = fake_cifar10_batches()
    tarball = write_tarball(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    dataset = load_cifar_pickle(tarball)
    assert dataset.name == "cifar10" and dataset.classes[3] == "cat"
    assert dataset.train.images.shape == (30, 3, 32, 32) and dataset.test.images.shape == (6, 3, 32, 32)
    first = files["data_batch_1"][b"data"][0]
    # the official rows hold the R plane, then G, then B, each 32x32 row-major
    assert np.array_equal(dataset.train.images[0, 1].numpy(), first[1024:2048].reshape(32, 32))
    assert dataset.train.labels[:6].tolist() == files["data_batch_1"][b"labels"]


def test_cifar10_extracted_folder_gives_the_same_data_as_the_tarball(tmp_path):
    files = fake_cifar10_batches()
    tarball = write_tarball(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    with tarfile.open(tarball) as archive:
        archive.extractall(tmp_path / "extracted", filter="data")
    from_tar = load_cifar_pickle(tarball)
    from_folder = load_image_dataset(str(tmp_path / "extracted"))
    assert torch.equal(from_tar.train.images, from_folder.train.images)
    assert torch.equal(from_tar.test.labels, from_folder.test.labels)


def test_cifar100_tarball_keeps_fine_and_coarse_labels(tmp_path):
    dataset = load_cifar_pickle(fake_cifar100_tarball(tmp_path / "cifar-100-python.tar.gz"))
    assert dataset.name == "cifar100" and len(dataset.classes) == 100 and len(dataset.coarse_classes) == 20
    assert torch.equal(dataset.train.coarse_labels, dataset.train.labels // 5)


def test_named_cifar_is_found_in_the_data_dir(tmp_path):
    write_tarball(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", fake_cifar10_batches())
    assert len(load_image_dataset("cifar10", data_dir=tmp_path).train) == 30


def test_missing_cifar_error_lists_where_it_looked_and_what_it_expected(tmp_path):
    with pytest.raises(DatasetNotFoundError) as raised:
        load_image_dataset("cifar10", data_dir=tmp_path)
    message = str(raised.value)
    assert str(tmp_path / "cifar-10-python.tar.gz") in message
    assert "cifar-10-batches-py" in message and "download" in message


def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(DatasetNotFoundError, match="digits, cifar10, cifar100"):
        load_image_dataset("imagenet-1k")


def test_corrupt_tarball_is_reported_with_its_path(tmp_path):
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + os.urandom(500))
    with pytest.raises(DatasetError, match="not a readable tar archive"):
        load_cifar_pickle(bad)


def test_truncated_pickle_batch_is_reported_with_its_file(tmp_path):
    files = fake_cifar10_batches()
    tarball = write_tarball(tmp_path / "c.tar.gz", "cifar-10-batches-py", files)
    with tarfile.open(tarball) as archive:
        archive.extractall(tmp_path / "x", filter="data")
    batch = tmp_path / "x" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_cifar_pickle(tmp_path / "x")


def test_wrong_shaped_batch_is_rejected_with_the_expected_shape(tmp_path):
    files = fake_cifar10_batches()
    files["test_batch"][b"data"] = np.zeros((6, 100), dtype=np.uint8)
    tarball = write_tarball(tmp_path / "c.tar.gz", "cifar-10-batches-py", files)
    with pytest.raises(DatasetError, match=r"uint8 \(N, 3072\)"):
        load_cifar_pickle(tarball)


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    files = fake_cifar10_batches()
    files["batches.meta"] = {b"label_names": _RunsCode()}
    tarball = write_tarball(tmp_path / "c.tar.gz", "cifar-10-batches-py", files)
    with pytest.raises(DatasetError, match="refusing to load"):
        load_cifar_pickle(tarball)


def test_download_verifies_the_md5_checksum(tmp_path, monkeypatch):
    payload = write_tarball(tmp_path / "src.tar.gz", "cifar-10-batches-py", fake_cifar10_batches()).read_bytes()
    good_md5 = hashlib.md5(payload).hexdigest()
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    monkeypatch.setitem(data.CIFAR_ARCHIVES, "cifar10",
                        ("cifar-10-python.tar.gz", "cifar-10-batches-py", "https://example.invalid/c10", "0" * 32))
    with pytest.raises(DatasetError, match="expected 0000"):
        data.download_cifar("cifar10", tmp_path / "dl")
    assert not list((tmp_path / "dl").iterdir()), "a download with a bad checksum must not be kept"
    monkeypatch.setitem(data.CIFAR_ARCHIVES, "cifar10",
                        ("cifar-10-python.tar.gz", "cifar-10-batches-py", "https://example.invalid/c10", good_md5))
    dataset = load_image_dataset("cifar10", data_dir=tmp_path / "dl", download=True)
    assert len(dataset.train) == 30 and (tmp_path / "dl" / "cifar-10-python.tar.gz").is_file()


# --------------------------------------------------------------------------- JPEG trees


def test_jpeg_tree_folder_loads_sorted_classes_and_labels(tmp_path):
    root = write_jpeg_tree(tmp_path / "tree")
    dataset = load_jpeg_tree(root, cache_dir=tmp_path / "cache")
    assert dataset.classes == ("cat", "dog")
    assert dataset.train.images.shape == (8, 3, 8, 8) and dataset.train.images.dtype == torch.uint8
    assert dataset.train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert dataset.test.labels.tolist() == [0, 0, 1, 1]
    # flat class colours: 40 for cat, 190 for dog (JPEG may move them slightly)
    assert abs(int(dataset.train.images[1, 0, 4, 4]) - 40) <= 3
    assert abs(int(dataset.test.images[3, 2, 4, 4]) - 190) <= 3


def test_jpeg_tree_archive_matches_the_folder_and_the_second_load_uses_the_cache(tmp_path, monkeypatch):
    root = write_jpeg_tree(tmp_path / "tree")
    archive = tmp_path / "tiny-jpeg.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(root / "test", arcname="test")  # archive order differs from sorted order
        tar.add(root / "train", arcname="train")
    cache = tmp_path / "cache"
    from_folder = load_jpeg_tree(root, cache_dir=cache)
    from_archive = load_image_dataset(str(archive), cache_dir=cache)
    assert torch.equal(from_folder.train.images, from_archive.train.images)
    assert torch.equal(from_folder.test.labels, from_archive.test.labels)
    assert len(list(cache.glob("tiny-*.npz"))) == 1

    def no_decoding(path):
        raise AssertionError("decoded again although a cache exists")

    monkeypatch.setattr(data, "_decode_tree", no_decoding)
    again = load_jpeg_tree(archive, cache_dir=cache)
    assert torch.equal(again.train.images, from_archive.train.images)


def test_a_corrupt_cache_file_is_rebuilt(tmp_path):
    root = write_jpeg_tree(tmp_path / "tree")
    first = load_jpeg_tree(root, cache_dir=tmp_path / "cache")
    (cache_file,) = (tmp_path / "cache").glob("*.npz")
    cache_file.write_bytes(b"not an npz")
    assert torch.equal(load_jpeg_tree(root, cache_dir=tmp_path / "cache").train.images, first.train.images)


def test_a_corrupt_jpeg_is_reported_with_its_path(tmp_path):
    root = write_jpeg_tree(tmp_path / "tree")
    (root / "train" / "dog" / "0002.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(DatasetError, match=r"train/dog/0002.jpg is not a readable image"):
        load_jpeg_tree(root, cache_dir=tmp_path / "cache")


def test_a_tree_without_a_test_split_says_what_it_expected(tmp_path):
    root = write_jpeg_tree(tmp_path / "tree", per_split=(2, 0))
    for folder in (root / "test").iterdir():
        folder.rmdir()
    with pytest.raises(DatasetNotFoundError, match=r"0 test images; expected a JPEG tree train\|test"):
        load_jpeg_tree(root, cache_dir=tmp_path / "cache")


def test_images_of_different_sizes_are_rejected(tmp_path):
    root = write_jpeg_tree(tmp_path / "tree")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "test" / "cat" / "9999.jpg")
    with pytest.raises(DatasetError, match="must have one size"):
        load_jpeg_tree(root, cache_dir=tmp_path / "cache")


def test_missing_jpeg_tree_names_the_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        load_jpeg_tree(tmp_path / "nowhere", cache_dir=tmp_path / "cache")


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR10_JPEG.exists(), reason="shared CIFAR-10 JPEG archive not present")
def test_shared_cifar10_jpeg_archive_has_50000_train_10000_test_images_in_10_classes(pytestconfig, tmp_path):
    # the pytest cache persists between sessions, so only the first run pays for JPEG decoding
    cache_plugin = getattr(pytestconfig, "cache", None)
    cache = cache_plugin.mkdir("labfolio-datasets") if cache_plugin is not None else tmp_path
    dataset = load_image_dataset("cifar10", data_dir=SHARED, cache_dir=cache)
    assert dataset.train.images.shape == (50000, 3, 32, 32)
    assert dataset.test.images.shape == (10000, 3, 32, 32)
    assert len(dataset.classes) == 10 and "airplane" in dataset.classes
    assert dataset.train.labels.bincount().tolist() == [5000] * 10
    assert dataset.test.labels.bincount().tolist() == [1000] * 10


# --------------------------------------------------------------------------- digits


def test_digits_are_8x8_grayscale_with_a_seed_independent_disjoint_split():
    dataset = load_digits()
    assert dataset.train.images.shape[1:] == (1, 8, 8)
    assert len(dataset.train) + len(dataset.test) == 1797
    assert int(dataset.train.images.max()) == 255 and len(dataset.classes) == 10
    again = load_digits()
    assert torch.equal(dataset.test.images, again.test.images)
    assert load_image_dataset("digits").train.images.shape == dataset.train.images.shape


# --------------------------------------------------------------------------- text


def test_text_bytes_split_keeps_every_byte_and_batches_predict_the_next_byte(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes(bytes(range(256)) * 20)
    splits = load_text_bytes(path, val_fraction=0.25)
    assert len(splits.train) + len(splits.val) == 5120 and len(splits.val) == 1280
    batches = ByteBatches(splits.train, block_size=16, batch_size=4, seed=0)
    x, y = batches.next()
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal((x + 1) % 256, y)  # the text counts up byte by byte


def test_byte_batches_are_reproducible_from_the_seed(tmp_path):
    data_tensor = torch.randint(0, 256, (1000,), dtype=torch.uint8)
    first = [ByteBatches(data_tensor, 8, 4, seed=3).next()[0] for _ in range(2)]
    assert torch.equal(first[0], first[1])
    assert not torch.equal(first[0], ByteBatches(data_tensor, 8, 4, seed=4).next()[0])


def test_text_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_text_bytes(tmp_path / "missing.txt")
    (tmp_path / "short.txt").write_text("to be")
    with pytest.raises(DatasetError, match="only 5 bytes"):
        load_text_bytes(tmp_path / "short.txt")
    with pytest.raises(DatasetError, match="block_size"):
        ByteBatches(torch.zeros(10, dtype=torch.uint8), block_size=10, batch_size=2)


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="tinyshakespeare.txt not present")
def test_tinyshakespeare_loads_as_bytes():
    splits = load_text_bytes(SHAKESPEARE)
    assert len(splits.train) + len(splits.val) == SHAKESPEARE.stat().st_size
    assert bytes(splits.train[:9].tolist()) == b"First Cit"


# --------------------------------------------------------------------------- augmentation and batching


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    image = torch.arange(1, 1 + 3 * 6 * 6, dtype=torch.float32).reshape(1, 3, 6, 6).repeat(16, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    out = random_crop_flip(image, padding=2, flip=False, generator=generator)
    padded = torch.nn.functional.pad(image[0], (2, 2, 2, 2))
    windows = {(dy, dx): padded[:, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)}
    offsets = set()
    for crop in out:
        matches = [key for key, window in windows.items() if torch.equal(window, crop)]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 4, "crops should use many different offsets"


def test_flip_only_mirrors_some_images_horizontally():
    images = torch.randint(0, 256, (64, 3, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = random_crop_flip(images, padding=0, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, images)])
    assert bool((flipped | kept).all()) and 10 < int(flipped.sum()) < 54


def test_augmentation_is_deterministic_for_a_seeded_generator():
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    first = random_crop_flip(images, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, random_crop_flip(images, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(first, random_crop_flip(images, generator=torch.Generator().manual_seed(8)))


def test_normalize_with_channel_stats_standardises_each_channel():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (200, 3, 4, 4), dtype=torch.uint8, generator=generator)
    images[:, 1] //= 4
    mean, std = channel_stats(images, chunk=64)
    normed = normalize(images, mean, std)
    assert torch.allclose(normed.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(normed.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)


def test_epoch_batches_cover_every_index_once():
    generator = torch.Generator().manual_seed(0)
    batches = list(epoch_batches(10, 3, generator, drop_last=False))
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert [len(b) for b in epoch_batches(10, 3, generator)] == [3, 3, 3]
