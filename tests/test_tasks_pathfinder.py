"""Pathfinder: generator (determinism, balance, geometry), shards, LRA's layout, errors, --check."""
import json
import os

import ml_collections
import numpy as np
import pytest

from attn_zoo import data
from attn_zoo.data import check, pathfinder, pathfinder_io


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("pf32")
    pathfinder_io.generate(str(d), resolution=32, difficulty="hard", count=30, seed=0, shard_size=12)
    return str(d)


def test_settings_follow_lra_table():
    s = pathfinder.settings(32, "hard")
    assert (s["marker_radius"], s["paddle_length"], s["paddle_thickness"], s["seed_distance"],
            s["continuity"], s["contour_length"]) == (1.5, 2.0, 0.5, 7.0, 1.0, 14)
    assert (s["distractor_length"], s["distractor_count"]) == (14 // 3, 20 // (14 // 3))
    assert pathfinder.settings(32, "baseline")["contour_length"] == 6
    assert pathfinder.settings(128, "intermediate")["contour_length"] == 9
    with pytest.raises(ValueError, match="difficulty"):
        pathfinder.settings(32, "easy")
    with pytest.raises(ValueError, match="32, 64, 128"):
        pathfinder.settings(48, "hard")


def test_images_are_deterministic_and_labels_balanced(shards):
    images, labels, meta = pathfinder_io.read_shards(shards)
    assert images.shape == (30, 32, 32) and images.dtype == np.uint8 and meta["count"] == 30
    assert labels.sum() == 15 and all(labels[2 * j] != labels[2 * j + 1] for j in range(15))
    s = pathfinder.settings(32, "hard")
    again, label = pathfinder.make_image(0, s, 17)  # any single image, regenerated alone
    np.testing.assert_array_equal(again, images[17])
    assert label == labels[17]
    assert not np.array_equal(pathfinder.make_image(1, s, 17)[0], images[17])
    assert check.image_stats(images, labels)["duplicates"] == 0
    assert images.max() == 255 and 0.02 < (images > 0).mean() < 0.5


@pytest.mark.parametrize("resolution", [64, 128])
def test_larger_resolutions(resolution):
    s = pathfinder.settings(resolution, "hard")
    img, _ = pathfinder.make_image(0, s, 0)
    assert img.shape == (resolution, resolution) and img.max() == 255


def test_positive_markers_share_a_path_and_negative_do_not():
    s = pathfinder.settings(128, "hard")  # large enough that the dashes never touch pixel-wise
    rng = np.random.default_rng(0)
    for label in (0, 1):
        for _ in range(100):
            try:
                paddles, markers = pathfinder._layout(s, rng, label)
                break
            except pathfinder._Retry:
                continue
        # which snake owns each marker: positive = the same target snake, negative = two
        ends = {}
        for k, snake in enumerate(paddles_by_snake(paddles, s)):
            ends[k] = [snake[0][0], snake[-1][1]]
        owners = [next(k for k, e in ends.items() if any(np.allclose(m, x) for x in e)) for m in markers]
        assert (owners[0] == owners[1]) == bool(label)
        assert np.hypot(*(np.asarray(markers[0]) - markers[1])) >= s["seed_distance"]


def paddles_by_snake(paddles, s):
    sizes = [s["contour_length"]] * 2 + [s["distractor_length"]] * s["distractor_count"]
    out, i = [], 0
    for n in sizes:
        out.append(paddles[i:i + n])
        i += n
    assert i == len(paddles)
    return out


def test_generate_refuses_a_different_dataset_in_the_same_dir(shards):
    with pytest.raises(ValueError, match="different data set"):
        pathfinder_io.generate(shards, resolution=32, difficulty="hard", count=31, seed=0, shard_size=12)


def _cfg(d, **kw):
    c = dict(task="pathfinder", dir=str(d), resolution=32, difficulty="hard", max_length=1024, generate=False,
             limit=0)
    c.update(kw)
    return ml_collections.ConfigDict(c)


def test_load_shards_splits_80_10_10(shards):
    task = data.load(_cfg(shards))
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 24, "val": 3, "test": 3}
    assert task.max_length == 1024 and task.num_classes == 2 and task.splits["train"].mask.all()


def test_lra_layout_reader(shards, tmp_path):
    images, labels, _ = pathfinder_io.read_shards(shards)
    pathfinder_io.write_lra_fixture(str(tmp_path), images[:10], labels[:10], per_file=4)
    task = data.load(_cfg(tmp_path))
    np.testing.assert_array_equal(task.splits["train"].inputs, images[:8].reshape(8, -1))
    np.testing.assert_array_equal(task.splits["test"].labels, labels[9:10])
    assert check.check("pathfinder", str(tmp_path)).facts[0].startswith("LRA layout: 10 metadata lines")


def test_lra_layout_malformed_and_missing(shards, tmp_path):
    images, labels, _ = pathfinder_io.read_shards(shards)
    pathfinder_io.write_lra_fixture(str(tmp_path), images[:6], labels[:6], per_file=3)
    with open(tmp_path / "metadata/1.npy", "a") as f:
        f.write("imgs/1 sample_9.png 9\n")
    with pytest.raises(ValueError, match=r"metadata/1.npy:4: expected"):
        data.load(_cfg(tmp_path))
    lines = open(tmp_path / "metadata/1.npy").read().splitlines()[:3]
    open(tmp_path / "metadata/1.npy", "w").write("\n".join(lines) + "\nimgs/1 sample_7.png 9 1\n")
    with pytest.raises(FileNotFoundError, match=r"sample_7.png: listed in metadata but missing"):
        data.load(_cfg(tmp_path))
    assert "sample_7.png: listed in metadata but missing" in str(check.check("pathfinder", str(tmp_path)))


def test_missing_data_says_how_to_generate(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        data.load(_cfg(tmp_path / "none"))
    assert f"attn-zoo data pathfinder --resolution 32 --difficulty hard --out {tmp_path / 'none'}" in str(e.value)


def test_check_generated_and_broken_shards(shards, tmp_path):
    report = check.check("pathfinder", shards)
    assert report.ok and "0 duplicate images" in str(report), str(report)
    meta = json.load(open(os.path.join(shards, "meta.json")))
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    report = check.check("pathfinder", str(tmp_path))
    assert not report.ok and "shard_00000.npz is missing" in str(report)
