"""One module per task; `task_for(cfg)` is the one place that maps an experiment to its task (the family's
`task`, declared with the family in kerasline/config)."""

from kerasline.config import ExperimentConfig, task_of
from kerasline.errors import UserError
from kerasline.pipelines import Datasets
from kerasline.pipelines.sources import Shard
from kerasline.training.tasks.base import Signature, Task
from kerasline.training.tasks.classification import Classification
from kerasline.training.tasks.generation import Generation
from kerasline.training.tasks.reconstruction import Reconstruction
from kerasline.training.tasks.segmentation import Segmentation
from kerasline.training.tasks.tabular import Tabular

TASKS: dict[str, type[Task]] = {
    "classification": Classification,
    "segmentation": Segmentation,
    "generate": Generation,
    "reconstruct": Reconstruction,
    "tabular": Tabular,
}


def task_for(cfg: ExperimentConfig) -> Task:
    return TASKS[task_of(cfg)](cfg)


def build_inputs(cfg: ExperimentConfig, shard: Shard | None = None) -> Datasets:
    """The experiment's batched datasets, as its task builds them."""
    return task_for(cfg).build_inputs(shard)


def anomaly_task(cfg: ExperimentConfig) -> Reconstruction:
    """The task of an experiment that scores anomalies (its reconstruction error), or a one-line refusal."""
    task = task_for(cfg)
    if not isinstance(task, Reconstruction):
        raise UserError(f"{cfg.name}: anomaly scores need an autoencoder (model.name autoencoder or vae)")
    return task


__all__ = ["TASKS", "Signature", "Task", "anomaly_task", "build_inputs", "task_for"]
