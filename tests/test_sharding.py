"""data.shard = "file": under several workers each reads only its share of the training files, through tfds.load
(whole TFRecord files per worker) or an image folder; validation and test stay whole on every worker."""

import numpy as np
import pytest
import tensorflow as tf

from kerasline.errors import DataError
from kerasline.pipelines.sources import load_splits
from kerasline.training.tasks import build_inputs


def context(worker: int, workers: int = 2) -> tf.distribute.InputContext:
    """One input pipeline and one replica per worker, as MultiWorkerMirroredStrategy on CPUs has it."""
    return tf.distribute.InputContext(workers, worker, num_replicas_in_sync=workers)


def first_pixels(ds: tf.data.Dataset) -> list[int]:
    return sorted(int(x[0, 0, 0]) for x, _ in ds.as_numpy_iterator())


@pytest.fixture
def probe_cfg(tiny_cfg, sharded_tfds, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(sharded_tfds))
    data = {"source": "tfds", "name": "shard_probe", "image_shape": (8, 8, 1), "num_classes": 2, "limit": None}
    return tiny_cfg.model_copy(update={"data": tiny_cfg.data.model_copy(update={**data, "shard": "file"})})


def test_tfds_file_sharding_splits_the_training_files_between_workers(probe_cfg):
    whole = load_splits(probe_cfg.data, 0)
    shares = [load_splits(probe_cfg.data, 0, context(i)) for i in (0, 1)]
    train = [first_pixels(share.train) for share in shares]
    everything = first_pixels(whole.train)
    assert len(everything) == 36 and sorted(everything + first_pixels(whole.validation)) == list(range(40))
    assert not set(train[0]) & set(train[1]) and sorted(train[0] + train[1]) == everything
    assert 0 < len(train[0]) < 36 and all(share.train_size == 36 for share in shares)
    for share in shares:  # every worker validates and tests on the whole splits
        assert first_pixels(share.validation) == first_pixels(whole.validation)
        assert first_pixels(share.test) == list(range(100, 110))

    limited = probe_cfg.data.model_copy(update={"limit": 10})
    shares = [load_splits(limited, 0, context(i)) for i in (0, 1)]
    assert [len(first_pixels(share.train)) for share in shares] == [5, 5] and shares[0].train_size == 10

    with pytest.raises(DataError, match=r"data.shard: tfds 'shard_probe' train\[:90%\] has fewer files than the 5"):
        load_splits(probe_cfg.data, 0, context(0, workers=5))


def test_each_worker_streams_per_replica_batches_of_its_share_for_the_same_number_of_steps(probe_cfg):
    cfg = probe_cfg.model_copy(update={"data": probe_cfg.data.model_copy(update={"batch_size": 8})})
    whole = build_inputs(cfg)
    workers = [build_inputs(cfg, context(i)) for i in (0, 1)]
    assert whole.steps_per_epoch == 5 and [w.steps_per_epoch for w in workers] == [5, 5]  # ceil(36 / 8)
    for worker in workers:
        own = set(first_pixels(worker.train_examples))
        batches = list(worker.train(0, 2).as_numpy_iterator())
        assert len(batches) == 2 * 5 and all(len(x) == 4 for x, _ in batches)  # 8 split between 2 replicas
        seen = {int(v) for x, _ in batches for v in np.round(x[:, 4, 4, 0])}  # the centre survives augmentation
        assert seen <= own  # its own share only, repeated where the share is short
    images, _ = next(worker.train(1, 2).as_numpy_iterator())  # resumed at epoch 2, as a restarted job does
    assert images.shape == (4, 8, 8, 1)


def make_folder(root, per_class: int = 12):
    """Two classes of 28×28 PNGs, image k of the folder filled with the value k."""
    for label, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            k = label * per_class + i
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(np.full((28, 28, 1), k, np.uint8)).numpy())
    return root


def test_a_folder_is_shared_by_file_and_each_worker_opens_only_its_own(tiny_cfg, tmp_path, monkeypatch):
    root = make_folder(tmp_path / "images")
    data = tiny_cfg.data.model_copy(update={"source": "folder", "name": str(root), "num_classes": 2, "limit": None})
    data = data.model_copy(update={"shard": "file"})
    whole = load_splits(data, 0)

    opened = []
    read_file = tf.io.read_file
    monkeypatch.setattr(tf.io, "read_file", lambda path: opened.append(path) or read_file(path))
    shares, reads = [], []
    for i in (0, 1):
        opened.clear()
        shares.append(load_splits(data, 0, context(i)))
        reads.append(set(opened))
    train = [first_pixels(share.train) for share in shares]
    assert not set(train[0]) & set(train[1]) and sorted(train[0] + train[1]) == first_pixels(whole.train)
    assert shares[0].train_size == len(first_pixels(whole.train)) == 19  # 24 - 3 test (12.5%) - 2 validation (10%)
    own = [reads[i] - reads[1 - i] for i in (0, 1)]  # the files one worker opened and the other did not
    assert len(own[0]) == len(train[0]) and len(own[1]) == len(train[1])
    assert len(reads[0] & reads[1]) == 5  # validation and test, opened by both


def test_each_worker_takes_its_index_from_the_cluster_and_the_batch_must_split_among_replicas(tiny_cfg, monkeypatch):
    from types import SimpleNamespace

    from kerasline.errors import UserError
    from kerasline.training import workers

    monkeypatch.setattr(workers, "multi_worker", lambda strategy: True)  # three workers without starting them
    cluster = tf.train.ClusterSpec({"worker": ["a:1", "b:2", "c:3"]})
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, task_type="worker", task_id=2)
    strategy = SimpleNamespace(num_replicas_in_sync=6, cluster_resolver=resolver)  # 2 replicas on each worker
    data = tiny_cfg.data.model_copy(update={"source": "folder", "shard": "file", "batch_size": 48})
    shard = workers.input_shard(tiny_cfg.model_copy(update={"data": data}), strategy)
    assert (shard.num_input_pipelines, shard.input_pipeline_id, shard.get_per_replica_batch_size(48)) == (3, 2, 8)

    assert workers.input_shard(tiny_cfg, strategy) is None  # data.shard = "data": Keras shards the batches
    odd = tiny_cfg.model_copy(update={"data": data.model_copy(update={"batch_size": 32})})
    with pytest.raises(UserError, match="data.batch_size: 32 does not split evenly among 6 replicas"):
        workers.input_shard(odd, strategy)
