"""The single training engine shared by every method."""
from jhseg.train.loop import NonFiniteLossError, train_and_evaluate

__all__ = ["NonFiniteLossError", "train_and_evaluate"]
