"""LoRA SFT through TRL/PEFT with trainable special tokens; run directories that reload onto the base model."""

from delia.training.artifacts import RunError, load_trained, read_run_meta
from delia.training.config import TrainConfig

__all__ = ["RunError", "TrainConfig", "load_trained", "read_run_meta", "run_train"]


def __getattr__(name: str):
    # run_train pulls in TRL; import it on first use so `import delia.training` stays light.
    if name == "run_train":
        from delia.training.train import run_train

        return run_train
    raise AttributeError(name)
