import pytest
import torch
from omegaconf import OmegaConf

from conftest import write_cifar
from depthstudy.config import compose
from depthstudy.data import DataError, TrainStream, load_data


def data_cfg(*overrides):
    return compose(list(overrides)).data


def test_digits_splits_are_seeded_and_disjoint():
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
