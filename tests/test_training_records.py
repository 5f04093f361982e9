"""training.records: history rows, best-epoch bookkeeping and its training-state keys."""

from __future__ import annotations

from robustbench_sparse.training.records import BestEpochs, Checkpointer, EpochRecord


def test_best_epochs_round_trip_through_the_training_state() -> None:
    best = BestEpochs(accuracy=0.9, epoch=3, robust_accuracy=0.4, robust_epoch=2)
    state = best.to_state()
    assert state == {
        "best_accuracy": 0.9,
        "best_epoch": 3,
        "best_robust_accuracy": 0.4,
        "best_robust_epoch": 2,
    }
    assert BestEpochs.from_state(state) == best
    # States saved before robust selection existed lack the robust keys: none yet.
    old = BestEpochs.from_state({"best_accuracy": 0.5, "best_epoch": 1})
    assert (old.robust_accuracy, old.robust_epoch) == (-1.0, -1)
    assert BestEpochs.from_state({}) == BestEpochs()


def test_epoch_record_round_trips_through_vars_and_checkpointer_defaults() -> None:
    rec = EpochRecord(1, 0.5, 0.8, 0.6, 0.7, 0.05, 0.3, False, 1.5, val_accuracy=0.75)
    assert EpochRecord(**vars(rec)) == rec  # how the history is saved and resumed
    assert rec.train_adv_loss is None and rec.val_robust_accuracy is None
    ck = Checkpointer()
    assert ck.save_last is ck.save_best is ck.save_best_robust is ck.load_state is None
