"""The trainer stops a diverged run before it logs or checkpoints it."""

from __future__ import annotations

import pytest

from trainkit.train.loop import NonFiniteLoss, check_finite_loss


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_loss_stops_training_with_a_clear_error(loss):
    with pytest.raises(NonFiniteLoss, match=r"at step 7: training diverged .*learningRate"):
        check_finite_loss(loss, 7)


def test_a_finite_loss_trains_on():
    check_finite_loss(3.25, 7)
