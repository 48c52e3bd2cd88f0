"""Training: pure jitted steps, the resumable loop, checkpoints, metrics, data parallelism."""
from attn_zoo.train.lock import WorkdirLocked
from attn_zoo.train.loop import evaluate, train_and_evaluate

__all__ = ["WorkdirLocked", "evaluate", "train_and_evaluate"]
