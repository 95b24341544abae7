import pytest
import torch
from omegaconf import OmegaConf

from helpers import write_cifar
from depthstudy.config import compose
from depthstudy import data as data_module
from depthstudy.data import Data, DataError, Split, TrainStream, load_data


def data_cfg(*overrides):
    return compose(list(overrides)).data


def ids_of(images: torch.Tensor) -> list[int]:
    """Decode the index written into each image by indexed_images (works on uint8 or unnormalised float)."""
    return (images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist()


def indexed_images(n: int) -> torch.Tensor:
    """n 8x8 uint8 images, image i carrying i in its first two pixels: where each image went can be read back."""
    images = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) % 256
    images[:, 0, 0, 1] = torch.arange(n) // 256
    return images


def test_digits_splits_are_disjoint_and_cover_every_image(monkeypatch):
    n = 1797
    monkeypatch.setattr(data_module, "_digits", lambda: (indexed_images(n), torch.arange(n) % 10, 10))
    d = load_data(data_cfg())
    train, val, test = (set(ids_of(s.images)) for s in (d.train, d.val, d.test))
    assert (len(train), len(val), len(test)) == (1200, 300, 297)  # no image twice within a split
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(range(n))
    assert ids_of(d.train.images) != sorted(ids_of(d.train.images))  # shuffled by split_seed, not taken in order


def test_cifar_validation_comes_from_the_training_files_and_test_is_the_test_file(tmp_path, skip_md5):
    import pickle

    folder = write_cifar(tmp_path, n=24)

    def rows(files):  # CIFAR's rows: 3,072 bytes, channel-major, as in the files
        return {bytes(r) for f in files for r in pickle.loads((folder / f).read_bytes())["data"]}

    train_rows = rows([f"data_batch_{i}" for i in range(1, 6)])
    as_rows = lambda s: [bytes(img.numpy().reshape(-1)) for img in s.images]  # noqa: E731 (NCHW = the row's order)
    d = load_data(data_cfg("data=cifar10", f"data.root={tmp_path}", "data.val_size=20"))
    train, val, test = (as_rows(s) for s in (d.train, d.val, d.test))
    assert len(set(train)) == 100 and len(set(val)) == 20 and not set(train) & set(val)
    assert set(train) | set(val) == train_rows
    assert set(test) == rows(["test_batch"])


def test_digits_splits_are_seeded():
    d = load_data(data_cfg())
    assert d.shape == (1, 8, 8) and d.num_classes == 10
    assert (len(d.train), len(d.val), len(d.test)) == (1200, 300, 297)
    assert d.train.images.dtype == torch.uint8
    again = load_data(data_cfg())
    assert torch.equal(d.val.labels, again.val.labels) and torch.equal(d.train.images, again.train.images)
    other = load_data(data_cfg("data.split_seed=1"))
    assert not torch.equal(d.val.labels, other.val.labels)


def test_pixel_mean_normalisation_centres_the_training_images():
    d = load_data(data_cfg())
    assert torch.allclose(d.mean, d.train.images.double().mean(0).float())  # the training split's mean, only
    x = d.normalize(d.train.images)
    assert x.mean(0).abs().max() < 1e-4  # the per-pixel mean image is subtracted
    c = load_data(data_cfg("data.normalize=channel_meanstd"))
    x = c.normalize(c.train.images)
    assert x.mean().abs() < 1e-4 and x.std().item() == pytest.approx(1.0, abs=1e-3)


def test_batches_are_a_pure_function_of_seed_and_iteration():
    d = load_data(data_cfg())
    a, b = TrainStream(d, 32, seed=3, augment=True, pad=1), TrainStream(d, 32, seed=3, augment=True, pad=1)
    for step in (0, 1, 37, 5):  # any order: what a resumed run does
        xa, ya = a.batch(step)
        xb, yb = b.batch(step)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a.batch(0)[1], TrainStream(d, 32, seed=4, augment=True).batch(0)[1])
    # An epoch visits every kept image once.
    labels = torch.cat([a.batch(s)[1] for s in range(a.batches_per_epoch)])
    assert len(labels) == a.batches_per_epoch * 32


def test_batched_crop_and_flip_equal_the_per_image_transform():
    d = load_data(data_cfg())
    s = TrainStream(d, 32, seed=0, augment=True, pad=2)
    images = d.train.images[:5]
    offsets = torch.tensor([[0, 4], [2, 2], [4, 0], [1, 3], [3, 1]])
    flips = torch.tensor([True, False, True, False, True])
    out = s.crop_flip(images, offsets, flips)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(5):
        ref = padded[i, :, offsets[i, 0]:offsets[i, 0] + 8, offsets[i, 1]:offsets[i, 1] + 8]
        assert torch.equal(out[i], ref.flip(-1) if flips[i] else ref)


@pytest.mark.parametrize("name,classes,train_files", [("cifar10", 10, 5), ("cifar100", 100, 1)])
def test_cifar_is_read_by_torchvision_from_its_on_disk_format(tmp_path, skip_md5, name, classes, train_files):
    write_cifar(tmp_path, n=24, name=name)
    d = load_data(data_cfg(f"data={name}", f"data.root={tmp_path}", "data.val_size=20"))
    assert d.shape == (3, 32, 32) and d.num_classes == classes
    assert (len(d.train), len(d.val), len(d.test)) == (train_files * 24 - 20, 20, 24)
    s = TrainStream(d, 4, seed=0, augment=True, pad=4)
    x, y = s.batch(0)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32


def test_cifar_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"not found.*data\.download=true.*cifar-10-python\.tar\.gz"):
        load_data(data_cfg("data=cifar10", f"data.root={tmp_path}"))


def test_a_failed_download_says_the_way_left_not_the_one_that_failed(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(CIFAR10, "download", offline)
    with pytest.raises(DataError) as e:
        load_data(data_cfg("data=cifar10", f"data.root={tmp_path}", "data.download=true"))
    assert "could not download cifar10" in str(e.value) and "unpack https://" in str(e.value)
    assert "data.download=true" not in str(e.value)  # it was given, and failed


def test_cifar_with_a_wrong_checksum_is_refused_naming_the_file(tmp_path):
    write_cifar(tmp_path)  # real format, but not the real bytes: the md5 check must catch it
    with pytest.raises(DataError, match=r"data_batch_1 is corrupted \(md5 mismatch\)"):
        load_data(data_cfg("data=cifar10", f"data.root={tmp_path}"))


def test_cifar_truncated_file_is_a_clear_error(tmp_path, skip_md5):
    folder = write_cifar(tmp_path)
    (folder / "data_batch_2").write_bytes((folder / "data_batch_2").read_bytes()[:100])
    with pytest.raises(DataError, match="could not be read"):
        load_data(data_cfg("data=cifar10", f"data.root={tmp_path}"))


def test_data_root_defaults_to_the_env_var(tmp_path, monkeypatch, skip_md5):
    write_cifar(tmp_path)
    monkeypatch.setenv("DEPTHSTUDY_DATA", str(tmp_path))
    d = load_data(OmegaConf.merge(data_cfg("data=cifar10"), {"val_size": 10}))
    assert len(d.val) == 10


def indexed_data(n: int = 100) -> Data:
    """Data whose images carry their index; identity normalisation, so batches can be decoded."""
    return Data("indexed", Split(indexed_images(n), torch.arange(n) % 10), None, None, 10, torch.zeros(()), torch.ones(()))


def test_each_batch_depends_only_on_seed_and_iteration_in_any_order_across_epochs():
    data = indexed_data(100)  # batch 32: 3 batches an epoch; steps 0..9 span four epochs
    stream = lambda: TrainStream(data, 32, seed=5, augment=True, pad=1)  # noqa: E731
    in_order = stream()
    reference = {s: in_order.batch(s) for s in range(10)}
    for order in ([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], [7, 0, 3, 2, 9, 1, 4, 8, 6, 5]):
        scrambled = stream()
        for s in order:
            x, y = scrambled.batch(s)
            assert torch.equal(x, reference[s][0]) and torch.equal(y, reference[s][1]), (order, s)
    for s in range(10):  # a fresh stream asked for one step, as a resumed run is
        assert torch.equal(stream().batch(s)[0], reference[s][0])


def test_an_epoch_visits_distinct_images_in_a_new_order_each_epoch():
    stream = TrainStream(indexed_data(100), 32, seed=5, augment=False)
    epochs = [sum((ids_of(stream.batch(e * 3 + b)[0]) for b in range(3)), []) for e in range(3)]
    for ids in epochs:
        assert len(ids) == len(set(ids)) == 96 and set(ids) <= set(range(100))  # 4 images dropped, none twice
    assert epochs[0] != epochs[1] != epochs[2]


def test_the_paper_presets_keep_each_pixels_own_mean_under_a_flip():
    """experiment=he2015 pads after subtracting the per-pixel mean (pad_fill=mean): a centred, mirrored crop is
    exactly the normalised image mirrored. zero subtracts the mean at the crop's coordinates: unmirrored."""
    assert compose(["experiment=he2015"]).data.pad_fill == "mean"
    d = load_data(data_cfg())
    for fill, aligned in (("mean", True), ("zero", False)):
        s = TrainStream(d, 32, seed=0, augment=True, pad=1, pad_fill=fill)
        s._start_epoch(0)
        s._offsets.fill_(1)  # centred: no shift
        s._flips.fill_(True)
        x, _ = s.batch(0)
        mirrored = d.normalize(d.train.images[s._perm[:32]]).flip(-1)
        assert torch.allclose(x, mirrored) == aligned


@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_pad_fill_pads_black_pixels_or_the_mean_colour(fill):
    """zero: pad the raw image with 0, then normalise (the padding becomes -mean * scale); mean: normalise,
    then pad with 0 (fb.resnet.torch). Offset (0, 0) puts the padding in the crop's first rows and columns."""
    d = load_data(data_cfg())
    s = TrainStream(d, 32, seed=0, augment=True, pad=1, pad_fill=fill)
    s._start_epoch(0)
    s._offsets.zero_()
    s._flips.zero_()
    x, _ = s.batch(0)
    images = d.train.images[s._perm[:32]]
    corner = x[:, 0, 0, 0]  # a padded pixel
    inside = x[:, 0, 1:, 1:]  # the image, shifted by the pad
    if fill == "mean":
        assert torch.equal(corner, torch.zeros(32))
        assert torch.allclose(inside, d.normalize(images)[:, 0, :-1, :-1])
    else:
        assert torch.allclose(corner, (-d.mean * d.scale).expand(1, 1, 8, 8)[0, 0, 0, 0].expand(32))
        expected = d.normalize(torch.nn.functional.pad(images, (1, 0, 1, 0))[:, :, :8, :8])
        assert torch.allclose(inside, expected[:, 0, 1:, 1:])


def test_digits_are_kept_in_the_cache_so_a_process_need_not_import_scikit_learn(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    import numpy as np
    from sklearn.datasets import load_digits

    from depthstudy.data import _digits

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    images, labels, classes = _digits()
    d = load_digits()
    assert classes == 10 and np.array_equal(labels.numpy(), d.target)
    assert np.array_equal(images.numpy()[:, 0], np.rint(d.images * 255 / 16).astype(np.uint8))
    (kept,) = (tmp_path / "depthstudy").glob("digits-sklearn-*.npz")
    probe = "import sys; from depthstudy.data import _digits; x = _digits(); print('sklearn' in sys.modules, int(x[0].sum()))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ})
    assert out.stdout.split() == ["False", str(int(images.sum()))], out.stderr
    kept.write_bytes(b"damaged")  # read from scikit-learn again, and kept again
    again, again_labels, _ = _digits()
    assert torch.equal(again, images) and torch.equal(again_labels, labels)
    assert np.load(kept)["images"].shape == (1797, 1, 8, 8)
