"""The trainer: one loop, one evaluation, one checkpoint format, exact resume.

* ``config``: ``TrainConfig`` and the checks every config value goes through (``ConfigError``);
* ``build``: what a config builds (network, optimizer and schedule, input encoding, loss) and
  the trained network a saved run holds;
* ``loop``: ``train_epoch``, the one training loop (plain training, the twin methods and the
  conversion fine-tuning; hooks for what differs), and ``evaluate``;
* ``checkpoint``: the one format of a run directory (``checkpoint.json`` with its ``kind``, the
  weights it names, metrics, the lock), atomic writes and the safe readers;
* ``run``: ``Run``, resuming, loading a run for evaluation, the ternary export.
"""
from .build import build_model, encode, load_network, make_optimizer
from .checkpoint import identify, read_checkpoint, write_checkpoint
from .config import DATASETS, RESUMABLE, ConfigError, TrainConfig
from .loop import DIVERGENCE_FACTOR, TrainingDiverged, divergence, evaluate, train_epoch
from .run import Run, export_ternary_run, load_for_eval, load_run, resume_run, summary_table
