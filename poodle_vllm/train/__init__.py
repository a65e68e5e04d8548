"""Developing a surrogate: training arguments, data from the log, trainer, calibration, artifacts.

* :mod:`~poodle_vllm.train.args` - :class:`TrainingArguments`, one documented dataclass;
* :mod:`~poodle_vllm.train.data` - training items from the Arrow log or a public dataset;
* :mod:`~poodle_vllm.train.trainer` - :class:`SurrogateTrainer` and :func:`fine_tune`;
* :mod:`~poodle_vllm.train.calibration` - temperature scaling;
* :mod:`~poodle_vllm.train.artifact` - the on-disk surrogate (HF folder + ``poodle.json``), versions;
* :mod:`~poodle_vllm.train.toy` - a tiny random encoder and a toy task for fast tests.

Nothing here imports torch at import time; it is imported when a model is built or trained.
"""

from poodle_vllm.train.args import TrainingArguments
from poodle_vllm.train.artifact import (
    SurrogateMetadata,
    latest_version,
    list_versions,
    load_metadata,
    save_surrogate_version,
    template_hash,
)
from poodle_vllm.train.data import DataReport, examples_from_dataset, load_task_examples
from poodle_vllm.train.trainer import EvalResult, SurrogateTrainer, TrainResult, fine_tune

__all__ = [
    "DataReport",
    "EvalResult",
    "SurrogateMetadata",
    "SurrogateTrainer",
    "TrainResult",
    "TrainingArguments",
    "examples_from_dataset",
    "fine_tune",
    "latest_version",
    "list_versions",
    "load_metadata",
    "load_task_examples",
    "save_surrogate_version",
    "template_hash",
]
