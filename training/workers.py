"""Who writes under MultiWorkerMirroredStrategy: the chief writes the run; the other workers write to temporary
directories they remove, and learn the run directory from the chief.

Everything that reads variables or runs the model (fit, validation, predict, evaluate, save_weights of the
metrics' sync-on-read variables) is a collective: every worker runs the same calls in the same order, and only
where the files land differs. A single-process strategy is its own chief and every helper here is a no-op.
"""

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import tensorflow as tf

from kerasline.config import ExperimentConfig
from kerasline.errors import UserError


def multi_worker(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        resolver and resolver.cluster_spec().as_dict()
    )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The `chief` task, or worker 0 in a cluster without one (TF's convention); any single-process run."""
    if not multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def worker_name(strategy: tf.distribute.Strategy) -> str:
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type} {resolver.task_id}"


def from_chief(strategy: tf.distribute.Strategy, value: int) -> int:
    """The chief's `value` on every worker (a collective, so also a barrier). Other workers' values are ignored."""
    if not multi_worker(strategy):
        return value

    def mine(value: tf.Tensor) -> tf.Tensor:
        # Global replica 0 lives on the chief (it comes first in the cluster's device order).
        first = tf.distribute.get_replica_context().replica_id_in_sync_group == 0
        return tf.where(first, value, tf.zeros_like(value))

    @tf.function  # eagerly, the strategy warns of its overhead
    def reduce(value: tf.Tensor) -> tf.Tensor:
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(mine, args=(value,)), axis=None)

    return int(reduce(tf.constant(value, tf.int64)))


def input_shard(cfg: ExperimentConfig, strategy: tf.distribute.Strategy) -> tf.distribute.InputContext | None:
    """Under data.shard = "file" on several workers: this worker's share of the files (one input pipeline per
    worker, as `distribute_datasets_from_function` has it); None wherever one pipeline reads everything."""
    if cfg.data.shard != "file" or not multi_worker(strategy):
        return None
    replicas = strategy.num_replicas_in_sync
    if cfg.data.batch_size % replicas:
        raise UserError(f"data.batch_size: {cfg.data.batch_size} does not split evenly among {replicas} replicas")
    resolver = strategy.cluster_resolver  # TF_CONFIG names workers only (training/strategy.py checks it)
    return tf.distribute.InputContext(
        num_input_pipelines=resolver.cluster_spec().num_tasks("worker"),
        input_pipeline_id=resolver.task_id,
        num_replicas_in_sync=replicas,
    )


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns on every worker once all have reached it: after it, what the chief wrote before it is there."""
    from_chief(strategy, 0)


@contextlib.contextmanager
def output_dir(strategy: tf.distribute.Strategy, run_dir: Path) -> Iterator[Path]:
    """Where this worker writes its checkpoints, logs and best weights: the run itself on the chief, elsewhere
    a temporary directory that is removed on the way out, whatever happens."""
    if is_chief(strategy):
        yield run_dir
        return
    scratch = Path(tempfile.mkdtemp(prefix="kerasline-worker-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
