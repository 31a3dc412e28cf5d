"""Faults injected into tunelab trials by the reliability tests.

Python imports `sitecustomize` at start-up from PYTHONPATH, so a test that puts this folder on
PYTHONPATH before Ray starts gets it in every trial process, and tunelab holds no test hooks.
A trial opts in through its learning rate, a value no study uses:
- `NAN_LR`: the training loss turns NaN in epoch 2 (a diverging run);
- `OSERROR_LR`: every attempt raises an OSError in epoch 1 (a disk that went away).
"""

import math

NAN_LR = 0.00123
OSERROR_LR = 0.00456


def _install() -> None:
    try:
        from tunelab import train
    except ImportError:  # a process of something else that inherited PYTHONPATH
        return
    train_epoch = train.Trainer._train_epoch

    def faulty_train_epoch(self: train.Trainer) -> tuple[float, float]:
        if self.cfg.train.lr == OSERROR_LR:
            raise OSError("simulated I/O error: the dataset disk is gone")
        loss, waited = train_epoch(self)
        if self.cfg.train.lr == NAN_LR and self.epoch >= 2:
            return math.nan, waited
        return loss, waited

    train.Trainer._train_epoch = faulty_train_epoch


_install()
