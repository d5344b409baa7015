"""Data for the recipes: CIFAR-10/100, scikit-learn digits, any text file as bytes.

Image datasets are small enough to live in one uint8 tensor (N, C, H, W) each for train and test,
which the recipes move to the GPU once; augmentation (`random_crop_flip`) then runs on whole batches
on the device, so loading is never the bottleneck.

CIFAR comes from any of:
- the official python-pickle tarball (``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``) or
  its extracted folder; `download_cifar` fetches it and verifies its MD5;
- a JPEG folder tree ``train|test/<class>/*.jpg``, or an archive of one (``.tar.xz`` etc.). The
  decoded pixels are cached as a ``.npz`` in the cache dir, so only the first load pays for decoding.

The pickles are read with an unpickler that only admits numpy arrays, so a tampered tarball cannot
run code. Missing or corrupt data raises `DatasetError` naming where it looked and what it expected.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from ..errors import LabfolioError

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "ImageSplit",
    "ImageDataset",
    "TextSplits",
    "CIFAR_ARCHIVES",
    "default_cache_dir",
    "default_data_dir",
    "load_image_dataset",
    "load_cifar_pickle",
    "download_cifar",
    "load_jpeg_tree",
    "load_digits",
    "load_text_bytes",
    "ByteBatches",
    "epoch_batches",
    "random_crop_flip",
    "channel_stats",
    "normalize",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_CACHE_VERSION = 1


class DatasetError(LabfolioError, ValueError):
    """A dataset is unreadable or not in the expected format."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No dataset was found where the loader looked."""


@dataclass(frozen=True)
class ImageSplit:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64 class ids
    coarse_labels: torch.Tensor | None = None  # (N,) int64 superclass ids (CIFAR-100 only)

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.ndim == 4, (
            f"images must be (N, C, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}"
        )
        assert self.labels.shape == self.images.shape[:1], (
            f"{len(self.labels)} labels for {len(self.images)} images"
        )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ImageDataset:
    name: str  # e.g. "cifar10", "digits"
    train: ImageSplit
    test: ImageSplit
    classes: tuple[str, ...]  # class id -> name
    coarse_classes: tuple[str, ...] | None = None  # superclass id -> name, when known
    source: str = ""  # where it was loaded from, for the run's provenance

    @property
    def image_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.train.images.shape[1:]
        return int(channels), int(height), int(width)


@dataclass(frozen=True)
class TextSplits:
    train: torch.Tensor  # (N_train,) uint8 bytes
    val: torch.Tensor  # (N_val,) uint8 bytes
    source: str  # path of the text file


# --------------------------------------------------------------------------- locations


def default_cache_dir() -> Path:
    """Where decoded datasets are cached: $LABFOLIO_CACHE_DIR, else $XDG_CACHE_HOME/labfolio."""
    if os.environ.get("LABFOLIO_CACHE_DIR"):
        return Path(os.environ["LABFOLIO_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "labfolio" / "datasets"


def default_data_dir() -> Path:
    """Where named datasets are looked for: $LABFOLIO_DATA_DIR, else ./data."""
    return Path(os.environ.get("LABFOLIO_DATA_DIR") or "data").expanduser()


# name -> (archive file name, folder inside it, url, md5 of the archive)
CIFAR_ARCHIVES = {
    "cifar10": (
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": (
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
}


def load_image_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ImageDataset:
    """Load "digits", "cifar10", "cifar100", or a path to any supported CIFAR/JPEG-tree source.

    For a CIFAR name, `data_dir` (default `default_data_dir()`) is searched for the pickle tarball,
    its extracted folder, or a JPEG tree / archive whose name starts with the dataset name
    (e.g. ``cifar10-jpeg-q75.tar.xz``). With `download=True`, a missing tarball is downloaded there.
    """
    if name == "digits":
        return load_digits()
    path = Path(name).expanduser()
    if name not in CIFAR_ARCHIVES:
        if path.exists():
            return _load_path(path, cache_dir)
        known = ", ".join(["digits", *CIFAR_ARCHIVES])
        raise DatasetNotFoundError(
            f"dataset {name!r} is neither a known name ({known}) nor an existing path"
        )
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    archive, inner, _url, _md5 = CIFAR_ARCHIVES[name]
    candidates = [folder / archive, folder / inner]
    if folder.is_dir():
        candidates += sorted(p for p in folder.iterdir() if p.name.startswith(name + "-"))
        candidates += [folder / name]
    for candidate in candidates:
        if candidate.exists():
            return _load_path(candidate, cache_dir)
    if download:
        return load_cifar_pickle(download_cifar(name, folder))
    looked = "\n  ".join(str(c) for c in candidates)
    raise DatasetNotFoundError(
        f"no {name} data found; looked at:\n  {looked}\n"
        f"expected the official {archive} (or its extracted {inner}/ folder) or a JPEG tree "
        f"train|test/<class>/*.jpg named {name}-*; pass download=True (--download) to fetch "
        f"{archive}, or point data_dir (--data-dir, $LABFOLIO_DATA_DIR) at the folder holding it"
    )


def _load_path(path: Path, cache_dir: str | os.PathLike[str] | None) -> ImageDataset:
    if path.is_dir():
        if _pickle_folder(path) is not None:
            return load_cifar_pickle(path)
        return load_jpeg_tree(path, cache_dir)
    if not tarfile.is_tarfile(path):
        raise DatasetError(f"{path} is not a tar archive; expected a CIFAR tarball or a JPEG-tree archive")
    if _is_pickle_archive(path):
        return load_cifar_pickle(path)
    return load_jpeg_tree(path, cache_dir)


def _is_pickle_archive(path: Path) -> bool:
    """Whether a tar archive holds CIFAR pickle batches, judged from its first file members."""
    pickle_names = {"data_batch_1", "test_batch", "batches.meta", "meta", "train", "test"}
    try:
        with tarfile.open(path) as archive:
            for seen, member in enumerate(archive):
                name = PurePosixPath(member.name).name
                # a JPEG tree's train/ and test/ are folders, the pickles' are files
                if member.isfile() and name in pickle_names:
                    return True
                if member.isfile() and name.lower().endswith(IMAGE_SUFFIXES):
                    return False
                if seen > 100:
                    break
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{path} is not a readable tar archive ({exc})") from exc
    return False


# --------------------------------------------------------------------------- CIFAR pickles


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickled numpy array needs, so a pickle cannot construct anything else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("__builtin__", "object"),
        ("builtins", "object"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")
        return super().find_class(module, name)


def _unpickle(blob: bytes, where: str) -> dict[str, object]:
    try:
        # latin1 decodes the Python 2 strings of the official files the same way on every platform
        loaded = _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="latin1").load()
    except Exception as exc:
        raise DatasetError(f"{where} is not a readable CIFAR pickle ({exc})") from exc
    if not isinstance(loaded, dict):
        raise DatasetError(f"{where} holds a {type(loaded).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in loaded.items()}


_PICKLE_LAYOUTS = {
    # dataset -> (train files, test file, meta file, fine label key, class-name key)
    "cifar10": (tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
                "labels", "label_names"),
    "cifar100": (("train",), "test", "meta", "fine_labels", "fine_label_names"),
}


def _pickle_folder(path: Path) -> Path | None:
    """The folder holding the pickle batches at or directly under `path`, if any."""
    for folder in (path, path / "cifar-10-batches-py", path / "cifar-100-python"):
        if (folder / "batches.meta").is_file() or (folder / "meta").is_file():
            return folder
    return None


def _read_pickle_files(path: Path) -> tuple[dict[str, bytes], str]:
    """Raw bytes of every file of a CIFAR pickle tarball or folder, keyed by base name."""
    files: dict[str, bytes] = {}
    if path.is_dir():
        folder = _pickle_folder(path)
        if folder is None:
            raise DatasetNotFoundError(
                f"{path} holds no CIFAR pickle files; expected batches.meta + data_batch_1..5 + "
                "test_batch (CIFAR-10) or meta + train + test (CIFAR-100)"
            )
        for file in folder.iterdir():
            if file.is_file():
                files[file.name] = file.read_bytes()
        return files, str(folder)
    if not path.exists():
        raise DatasetNotFoundError(f"{path} does not exist; expected a CIFAR python tarball")
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                if member.isfile():
                    handle = archive.extractfile(member)
                    assert handle is not None
                    files[PurePosixPath(member.name).name] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{path} is not a readable tar archive ({exc}); re-download it") from exc
    return files, str(path)


def _names(values: object) -> tuple[str, ...]:
    return tuple(v.decode("latin1") if isinstance(v, bytes) else str(v) for v in values)  # type: ignore[attr-defined]


def load_cifar_pickle(path: str | os.PathLike[str]) -> ImageDataset:
    """CIFAR-10 or CIFAR-100 (detected from the files) from the python tarball or its folder."""
    files, where = _read_pickle_files(Path(path).expanduser())
    name = "cifar10" if "batches.meta" in files else "cifar100" if "meta" in files else None
    if name is None:
        raise DatasetError(
            f"{where} has neither batches.meta (CIFAR-10) nor meta (CIFAR-100); found "
            f"{sorted(files)[:10]}"
        )
    train_files, test_file, meta_file, label_key, names_key = _PICKLE_LAYOUTS[name]
    missing = [f for f in (*train_files, test_file) if f not in files]
    if missing:
        raise DatasetError(f"{where} is missing {', '.join(missing)} (expected {name} pickle files)")
    meta = _unpickle(files[meta_file], f"{where}/{meta_file}")
    if names_key not in meta:
        raise DatasetError(f"{where}/{meta_file} has no {names_key!r}; found keys {sorted(meta)}")
    classes = _names(meta[names_key])
    coarse_classes = _names(meta["coarse_label_names"]) if "coarse_label_names" in meta else None

    def split(batch_names: tuple[str, ...]) -> ImageSplit:
        images, labels, coarse = [], [], []
        for batch_name in batch_names:
            batch = _unpickle(files[batch_name], f"{where}/{batch_name}")
            data = batch.get("data")
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
                    or data.shape[1] != 3 * 32 * 32:
                got = getattr(data, "shape", type(data).__name__)
                raise DatasetError(f"{where}/{batch_name}: 'data' must be uint8 (N, 3072), got {got}")
            batch_labels = np.asarray(batch.get(label_key, []), dtype=np.int64)
            if batch_labels.shape != (len(data),):
                raise DatasetError(
                    f"{where}/{batch_name}: {len(batch_labels)} {label_key} for {len(data)} images"
                )
            if batch_labels.size and not 0 <= batch_labels.min() <= batch_labels.max() < len(classes):
                raise DatasetError(f"{where}/{batch_name}: labels outside 0..{len(classes) - 1}")
            images.append(data.reshape(-1, 3, 32, 32))  # rows are the R, G, B planes in turn
            labels.append(batch_labels)
            if coarse_classes is not None:
                if "coarse_labels" not in batch:
                    raise DatasetError(f"{where}/{batch_name}: no 'coarse_labels' (expected CIFAR-100)")
                coarse.append(np.asarray(batch["coarse_labels"], dtype=np.int64))
        return ImageSplit(
            images=torch.from_numpy(np.concatenate(images)),
            labels=torch.from_numpy(np.concatenate(labels)),
            coarse_labels=torch.from_numpy(np.concatenate(coarse)) if coarse else None,
        )

    return ImageDataset(name, split(train_files), split((test_file,)), classes, coarse_classes, where)


def download_cifar(name: str, dest_dir: str | os.PathLike[str]) -> Path:
    """Download the official CIFAR python tarball into `dest_dir`, verifying its MD5."""
    if name not in CIFAR_ARCHIVES:
        raise ValueError(f"unknown CIFAR dataset {name!r}; choose one of {', '.join(CIFAR_ARCHIVES)}")
    archive, _inner, url, md5 = CIFAR_ARCHIVES[name]
    dest = Path(dest_dir).expanduser() / archive
    if dest.is_file() and _md5(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DatasetNotFoundError(
            f"could not download {url} ({exc}); download it by hand into {dest.parent}"
        ) from exc
    got = _md5(partial)
    if got != md5:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"{url} downloaded with MD5 {got}, expected {md5}; try again")
    partial.replace(dest)
    return dest


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- JPEG trees


def _tree_root(path: Path) -> Path:
    """`path` itself when it holds train/, else its only subfolder that does."""
    if (path / "train").is_dir():
        return path
    inner = [p for p in path.iterdir() if p.is_dir() and (p / "train").is_dir()]
    if len(inner) == 1:
        return inner[0]
    raise DatasetNotFoundError(
        f"{path} has no train/ folder; expected a JPEG tree train|test/<class>/*.jpg"
    )


def _fingerprint(path: Path) -> str:
    """Changes whenever the source changes, so a stale cache is never used."""
    parts = [str(path.resolve())]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        parts += [str(len(files)), str(max((p.stat().st_mtime_ns for p in files), default=0))]
    else:
        stat = path.stat()
        parts += [str(stat.st_size), str(stat.st_mtime_ns)]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def _cache_file(path: Path, cache_dir: Path) -> Path:
    stem = path.name.split(".")[0] or "images"
    return cache_dir / f"{stem}-{_fingerprint(path)}.npz"


def _decode(blob: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(f"{where} is not a readable image ({exc})") from exc


def _iter_tree_images(path: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """(split, class, file name, encoded bytes) for every image of a tree or tree archive."""
    if path.is_dir():
        root = _tree_root(path)
        for file in sorted(root.glob("*/*/*")):
            if file.suffix.lower() in IMAGE_SUFFIXES and file.parts[-3] in ("train", "test"):
                yield file.parts[-3], file.parts[-2], file.name, file.read_bytes()
        return
    try:
        with tarfile.open(path) as archive:
            # stream the members: decoding straight from the archive needs no 60k-file extraction
            for member in archive:
                parts = PurePosixPath(member.name).parts
                if (
                    member.isfile()
                    and len(parts) >= 3
                    and parts[-3] in ("train", "test")
                    and parts[-1].lower().endswith(IMAGE_SUFFIXES)
                ):
                    handle = archive.extractfile(member)
                    assert handle is not None
                    yield parts[-3], parts[-2], parts[-1], handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{path} is not a readable tar archive ({exc})") from exc


def _decode_tree(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
    for split, label, file_name, blob in _iter_tree_images(path):
        found[split].append((label, file_name, blob))
    if not found["train"] or not found["test"]:
        counts = {split: len(items) for split, items in found.items()}
        raise DatasetNotFoundError(
            f"{path} holds {counts['train']} train and {counts['test']} test images; expected a "
            "JPEG tree train|test/<class>/*.jpg with both splits"
        )
    classes = sorted({label for label, _, _ in found["train"]})
    unknown = sorted({label for label, _, _ in found["test"]} - set(classes))
    if unknown:
        raise DatasetError(f"{path}: test classes {unknown[:5]} have no train images")
    index = {label: i for i, label in enumerate(classes)}
    arrays: dict[str, np.ndarray] = {"classes": np.array(classes), "version": np.array(_CACHE_VERSION)}
    shape = None
    for split, items in found.items():
        items.sort(key=lambda item: (index[item[0]], item[1]))  # archive order must not matter
        images = []
        for label, file_name, blob in items:
            pixels = _decode(blob, f"{path}:{split}/{label}/{file_name}")
            if shape is None:
                shape = pixels.shape
            elif pixels.shape != shape:
                raise DatasetError(
                    f"{path}:{split}/{label}/{file_name} is {pixels.shape[1]}x{pixels.shape[0]}, "
                    f"the others are {shape[1]}x{shape[0]}; all images must have one size"
                )
            images.append(pixels)
        arrays[f"{split}_images"] = np.stack(images).transpose(0, 3, 1, 2)  # (N, 3, H, W)
        arrays[f"{split}_labels"] = np.array([index[label] for label, _, _ in items], dtype=np.int64)
    return arrays


def _read_cache(cache: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(cache, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, EOFError):
        return None  # unreadable cache: decode again and overwrite it
    keys = {"classes", "version", "train_images", "train_labels", "test_images", "test_labels"}
    if set(arrays) != keys or int(arrays["version"]) != _CACHE_VERSION:
        return None
    return arrays


def load_jpeg_tree(
    path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> ImageDataset:
    """Images from ``train|test/<class>/*.jpg``: a folder or a tar archive (.tar, .tar.gz, .tar.xz).

    Classes are the sorted folder names under train/. The decoded set is cached as an .npz in
    `cache_dir` (default `default_cache_dir()`), keyed by the source's path, size and mtime.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise DatasetNotFoundError(
            f"{source} does not exist; expected a JPEG tree train|test/<class>/*.jpg or an archive of one"
        )
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache = _cache_file(source, cache_root)
    arrays = _read_cache(cache) if cache.is_file() else None
    if arrays is None:
        arrays = _decode_tree(source)
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(cache.name + f".{os.getpid()}.part.npz")
        np.savez(partial, **arrays)  # uncompressed: loading it back is a plain read
        partial.replace(cache)
    name = source.name.split(".")[0]

    def split(prefix: str) -> ImageSplit:
        return ImageSplit(
            images=torch.from_numpy(np.ascontiguousarray(arrays[f"{prefix}_images"])),
            labels=torch.from_numpy(arrays[f"{prefix}_labels"]),
        )

    classes = tuple(str(c) for c in arrays["classes"])
    return ImageDataset(name, split("train"), split("test"), classes, None, str(source))


# --------------------------------------------------------------------------- digits


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> ImageDataset:
    """scikit-learn's 8x8 digits (1797 images, bundled, no download) as (N, 1, 8, 8) uint8.

    The train/test split depends only on `split_seed`, never on the training seed, so every run of
    a study is scored on the same test images.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = sklearn_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(split_seed).permutation(len(labels))
    n_test = round(test_fraction * len(labels))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    classes = tuple(str(c) for c in bunch.target_names)
    return ImageDataset(
        "digits",
        ImageSplit(torch.from_numpy(pixels[train]), torch.from_numpy(labels[train])),
        ImageSplit(torch.from_numpy(pixels[test]), torch.from_numpy(labels[test])),
        classes,
        source="sklearn.datasets.load_digits",
    )


# --------------------------------------------------------------------------- text


def load_text_bytes(path: str | os.PathLike[str], val_fraction: float = 0.1) -> TextSplits:
    """A file's raw bytes (vocabulary 256), split into train (first part) and val (last part)."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise DatasetNotFoundError(
            f"text file {source} does not exist; expected any text file, e.g. tinyshakespeare.txt"
        )
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    data = np.frombuffer(source.read_bytes(), dtype=np.uint8)
    n_val = int(len(data) * val_fraction)
    if len(data) < 64 or n_val < 16:
        raise DatasetError(
            f"{source} has only {len(data)} bytes; a byte LM needs at least a few kilobytes of text"
        )
    tensor = torch.from_numpy(data.copy())
    return TextSplits(tensor[: len(data) - n_val], tensor[len(data) - n_val :], str(source))


class ByteBatches:
    """Random windows of a byte tensor as (inputs, next-byte targets), reproducible from a seed.

    The offsets come from a CPU generator, so the same seed gives the same batches on every device.
    """

    def __init__(
        self,
        data: torch.Tensor,
        block_size: int,
        batch_size: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        assert data.ndim == 1 and data.dtype == torch.uint8, "data must be a 1-D uint8 byte tensor"
        if len(data) <= block_size:
            raise DatasetError(
                f"the text has {len(data)} bytes, fewer than block_size + 1 = {block_size + 1}; "
                "use a longer text or a smaller block_size"
            )
        self.block_size = block_size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.data = data.to(self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self._window = torch.arange(block_size + 1, device=self.device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), both (B, T) int64, with y[:, t] the byte after x[:, t]."""
        starts = torch.randint(
            0, len(self.data) - self.block_size, (self.batch_size,), generator=self.generator
        )
        windows = self.data[starts.to(self.device)[:, None] + self._window].long()  # (B, T+1)
        return windows[:, :-1], windows[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next()


def epoch_batches(
    n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True, drop_last: bool = True
) -> Iterator[torch.Tensor]:
    """Index batches (CPU int64) covering 0..n-1 once, shuffled with `generator`."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


# --------------------------------------------------------------------------- on-device transforms


def random_crop_flip(
    images: torch.Tensor,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip, for a whole batch at once.

    images: (B, C, H, W) of any dtype, on any device; returns the same shape, dtype and device.
    Random numbers come from `generator` (on its own device), so a seeded generator makes the
    augmentation reproducible.
    """
    assert images.ndim == 4, f"images must be (B, C, H, W), got {tuple(images.shape)}"
    batch, _channels, height, width = images.shape
    rng_device = generator.device if generator is not None else images.device
    out = images
    if padding > 0:
        padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=rng_device)
        dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=rng_device)
        rows = dy.to(images.device)[:, None] + torch.arange(height, device=images.device)  # (B, H)
        cols = dx.to(images.device)[:, None] + torch.arange(width, device=images.device)  # (B, W)
        index = torch.arange(batch, device=images.device)[:, None, None]
        # advanced indices around a slice put their broadcast dims first: (B, H, W, C)
        out = padded[index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
    if flip:
        mirror = torch.rand(batch, generator=generator, device=rng_device) < 0.5
        out = torch.where(mirror.to(images.device)[:, None, None, None], out.flip(-1), out)
    return out


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, on the [0, 1] scale (accumulated in fp64)."""
    assert images.ndim == 4, f"images must be (N, C, H, W), got {tuple(images.shape)}"
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].to(torch.float64).cpu() / 255.0
        total += block.sum(dim=(0, 2, 3))
        squares += block.square().sum(dim=(0, 2, 3))
    count = images.numel() / channels
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> `dtype`, scaled to [0, 1] then standardised per channel."""
    assert images.shape[1] == len(mean) == len(std), (
        f"images have {images.shape[1]} channels but mean/std have {len(mean)}/{len(std)}"
    )
    mean_t = torch.tensor(mean, dtype=dtype, device=images.device)[:, None, None]
    std_t = torch.tensor(std, dtype=dtype, device=images.device)[:, None, None]
    return (images.to(dtype) / 255.0 - mean_t) / std_t
