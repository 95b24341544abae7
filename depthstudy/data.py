"""Data sets as uint8 tensors, splits, and batched augmentation on the training device.

Every data set becomes `Data`: uint8 images (N, C, H, W) and int64 labels per split, kept whole
on the device (CIFAR-10 is 150 MB as uint8), plus the normalisation taken from the training split.
Mini-batches are cut, augmented (pad + random crop, horizontal flip) and normalised as whole
batches: no per-image PIL work, so 2 CPU cores keep up and a GPU never waits for the host.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depthstudy import rundir
from depthstudy.device import memory_format
from depthstudy.errors import DepthstudyError, UsageError
from depthstudy.schema import DATASETS

CIFAR_URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}


class DataError(DepthstudyError):
    """Data missing, corrupted or unreadable."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Data:
    name: str
    train: Split
    val: Split | None
    test: Split | None
    num_classes: int
    mean: torch.Tensor  # float32, broadcasts against (N, C, H, W), in uint8 units
    scale: torch.Tensor  # float32, 1 / std (or 1/255 for plain mean subtraction)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    def to(self, device) -> Data:
        move = lambda s: s.to(device) if s is not None else None  # noqa: E731
        return replace(self, train=move(self.train), val=move(self.val), test=move(self.test),
                       mean=self.mean.to(device), scale=self.scale.to(device))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> float32 network input."""
        return (images.float() - self.mean) * self.scale


def default_root() -> Path:
    """Where CIFAR files live unless data.root says otherwise: $DEPTHSTUDY_DATA or the user cache."""
    if os.environ.get("DEPTHSTUDY_DATA"):
        return Path(os.environ["DEPTHSTUDY_DATA"]).expanduser()
    return rundir.cache_root()


def load_data(data_cfg) -> Data:
    """The data set a config names, split and normalised, on the CPU."""
    name = data_cfg.name
    if name == "digits":
        images, labels, num_classes = _digits()
        test = None
    elif name in ("cifar10", "cifar100"):
        root = Path(data_cfg.root).expanduser() if data_cfg.get("root") else default_root()
        full, test, num_classes = _cifar(name, root, download=bool(data_cfg.download))
        images, labels = full.images, full.labels
    else:
        raise UsageError(f"data.name={name!r} is not a known data set; choose one of: {', '.join(DATASETS)}")

    n = len(labels)
    val_size = int(data_cfg.val_size)
    test_size = int(data_cfg.get("test_size") or 0) if test is None else 0
    if val_size < 0 or test_size < 0 or val_size + test_size >= n:
        raise UsageError(f"data.val_size={val_size} (+ data.test_size={test_size}) must leave training images out of {n}")
    # The split has its own seed: runs with different seeds share one validation set.
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(data_cfg.split_seed)))
    take = lambda idx: Split(images[idx].contiguous(), labels[idx].contiguous())  # noqa: E731
    train = take(order[val_size + test_size:])
    val = take(order[:val_size]) if val_size else None
    if test is None and test_size:
        test = take(order[val_size:val_size + test_size])

    mean, scale = normalization(train.images, str(data_cfg.normalize))
    return Data(name, train, val, test, num_classes, mean, scale)


def normalization(images: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    # Sums in float64 without a float64 copy of the images (1.2 GB for CIFAR-10).
    n = images.shape[0]
    if kind == "pixel_mean":  # the paper: subtract the per-pixel mean image
        return (images.sum(0, dtype=torch.float64) / n).float(), torch.tensor(1 / 255.0)
    if kind == "channel_meanstd":  # common practice, opt-in: per-channel mean and std
        count = n * images.shape[2] * images.shape[3]
        total = torch.zeros(images.shape[1], dtype=torch.float64)
        squares = torch.zeros(images.shape[1], dtype=torch.float64)
        for chunk in images.split(4096):  # float64 a chunk at a time
            chunk = chunk.double()
            total += chunk.sum((0, 2, 3))
            squares += chunk.square().sum((0, 2, 3))
        mean = total / count
        var = (squares / count - mean.square()) * count / (count - 1)
        return mean.float()[:, None, None], (1 / var.sqrt().clamp_min(1e-3)).float()[:, None, None]
    raise UsageError(f"data.normalize={kind!r} is unknown; choose pixel_mean (the paper) or channel_meanstd")


def _digits() -> tuple[torch.Tensor, torch.Tensor, int]:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16) as 1-channel uint8.

    Kept as .npz in the user cache (per scikit-learn version): importing scikit-learn takes ~2 s, in every
    process that trains on digits (each joblib worker, each `depthstudy train`)."""
    from importlib.metadata import version

    cached = rundir.cache_root() / f"digits-sklearn-{version('scikit-learn')}.npz"
    try:
        with np.load(cached) as f:
            images, labels = f["images"], f["labels"]
        if images.shape == (1797, 1, 8, 8) and images.dtype == np.uint8 and labels.shape == (1797,):
            return torch.from_numpy(images), torch.from_numpy(labels), 10
    except (OSError, ValueError, KeyError):
        pass  # not there yet, or damaged: read it from scikit-learn again
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = d.target.astype(np.int64)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # atomic: a concurrent worker reads the whole file or none
        rundir.atomic_write_bytes(cached, lambda f: np.savez(f, images=images, labels=labels))
    except OSError:
        pass  # a read-only cache only costs the import next time
    return torch.from_numpy(images), torch.from_numpy(labels), 10


def _cifar(name: str, root: Path, download: bool) -> tuple[Split, Split, int]:
    """CIFAR's training and test sets through torchvision's own dataset class, with errors that say what to do."""
    from torchvision.datasets import CIFAR10, CIFAR100, cifar

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    folder = root / cls.base_folder
    if download:
        try:
            cls(str(root), train=True, download=True)
        except Exception as e:  # network errors come in many types; all mean the same to the user
            raise DataError(f"could not download {name} to {root} ({e}); "
                            f"{_where_to_put(name, root, downloading=True)}") from None
    files = cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]
    missing = [f for f, _ in files if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{name} not found: {folder} lacks {', '.join(missing)}; {_where_to_put(name, root)}")
    try:
        splits = [cls(str(root), train=train, download=False) for train in (True, False)]
    except RuntimeError:  # torchvision's md5 check failed: name the file (looked up at call time: tests swap it)
        bad = next((f for f, md5 in files if not cifar.check_integrity(str(folder / f), md5)), None)
        raise DataError(f"{name} file {folder / bad} is corrupted (md5 mismatch); delete it and download again "
                        f"(data.download=true) or copy a good one from {CIFAR_URLS[name]}" if bad else
                        f"{name} under {folder} could not be read; download it again (data.download=true)") from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
        raise DataError(f"{name} under {folder} could not be read ({type(e).__name__}: {e}); "
                        "the files are damaged: download them again (data.download=true)") from None
    train, test = (split_of(ds) for ds in splits)
    return train, test, len(splits[0].classes)


def split_of(dataset) -> Split:
    """A torchvision CIFAR dataset's images (N, 32, 32, 3 uint8) and labels as a Split (N, 3, 32, 32)."""
    images = torch.from_numpy(np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2)))
    return Split(images, torch.tensor(dataset.targets, dtype=torch.int64))


def _where_to_put(name: str, root: Path, downloading: bool = False) -> str:
    """What to do; downloading: data.download=true was given and failed, so only the manual way is left."""
    return ("" if downloading else "download it with data.download=true, or ") + (
        f"unpack {CIFAR_URLS[name]} into {root} (or point data.root / $DEPTHSTUDY_DATA at a folder that holds it)")


class TrainStream:
    """Training mini-batches as a pure function of (seed, iteration).

    Each epoch draws a permutation, crop offsets and flips from a generator seeded by
    (seed, epoch), so a run resumed at iteration k sees exactly the batches it would have seen.
    Batches are whole: the last incomplete batch of an epoch is dropped.
    """

    PAD_FILLS = ("zero", "mean")

    def __init__(self, data: Data, batch_size: int, seed: int, augment: bool, pad: int = 4,
                 channels_last: bool = False, pad_fill: str = "zero"):
        """pad_fill (data.pad_fill): "mean" normalises first and pads with 0, i.e. the mean colour, so each pixel
        keeps its own mean (fb.resnet.torch; CIFAR's default); "zero" pads the raw image with black pixels, crops,
        then normalises (torchvision's RandomCrop(32, padding=4) before Normalize, as in akamaster's
        pytorch_resnet_cifar10): a per-pixel mean then lands up to `pad` pixels off, unmirrored on a flip.
        The default "zero" here is what runs made before the key existed did."""
        if pad_fill not in self.PAD_FILLS:
            raise UsageError(f"data.pad_fill={pad_fill!r} is unknown; choose zero or mean")
        self.data, self.split = data, data.train
        self.batch_size, self.seed, self.augment, self.pad = batch_size, seed, augment, pad
        self.pad_fill = pad_fill
        self.memory_format = memory_format(channels_last)
        self.batches_per_epoch = len(self.split) // batch_size
        if self.batches_per_epoch == 0:
            raise UsageError(f"optim.batch_size={batch_size} is larger than the training split ({len(self.split)} images)")
        self._epoch = -1
        device = self.split.images.device
        _, _, h, w = self.split.images.shape
        self._rows = torch.arange(h, device=device)
        self._cols = torch.arange(w, device=device)

    def _start_epoch(self, epoch: int) -> None:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n, device = len(self.split), self.split.images.device
        self._perm = torch.randperm(n, generator=g).to(device)
        self._offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g).to(device)
        self._flips = (torch.rand(n, generator=g) < 0.5).to(device)
        self._epoch = epoch

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, pos = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            self._start_epoch(epoch)
        sel = slice(pos * self.batch_size, (pos + 1) * self.batch_size)
        idx = self._perm[sel]
        images, labels = self.split.images[idx], self.split.labels[idx]
        if not self.augment:
            images = self.data.normalize(images)
        elif self.pad_fill == "mean":
            images = self.crop_flip(self.data.normalize(images), self._offsets[sel], self._flips[sel])
        else:
            images = self.data.normalize(self.crop_flip(images, self._offsets[sel], self._flips[sel]))
        return images.contiguous(memory_format=self.memory_format), labels

    def crop_flip(self, images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Pad by `pad` zeros, take an H x W crop at each image's offset, mirror where flips is set."""
        b, c, h, w = images.shape
        padded = F.pad(images, (self.pad,) * 4)
        rows = (offsets[:, 0:1] + self._rows)[:, None, :, None]  # (B, 1, H, 1)
        cols = offsets[:, 1:2] + self._cols  # (B, W)
        cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, None, :]  # mirror = read columns backwards
        batch = torch.arange(b, device=images.device)[:, None, None, None]
        chans = torch.arange(c, device=images.device)[None, :, None, None]
        return padded[batch, chans, rows, cols]


def eval_batches(data: Data, split: Split, batch_size: int, channels_last: bool = False):
    """(inputs, labels) over a whole split in order, normalised like training batches."""
    fmt = memory_format(channels_last)
    for i in range(0, len(split), batch_size):
        yield data.normalize(split.images[i:i + batch_size]).contiguous(memory_format=fmt), split.labels[i:i + batch_size]
