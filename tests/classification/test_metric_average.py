"""Loss and accuracy averaged over batches (the original's convention) or over samples."""

import pytest
import torch

from sgtheory.errors import ConfigError


def test_mean_over_batches_by_hand():
    """The Randman test set in batches of 400: 400 / 400 / 400 / 300 samples.

    Per-batch accuracies 1, 0.5, 0.75, 0.2: over batches (1 + 0.5 + 0.75 + 0.2) / 4 = 0.6125;
    over samples (400 + 200 + 300 + 60) / 1500 = 960 / 1500 = 0.64.
    """
    from convsnn.data import mean_over_batches

    accs, sizes = [1.0, 0.5, 0.75, 0.2], [400, 400, 400, 300]
    assert mean_over_batches(accs, sizes, "batch") == pytest.approx(0.6125, abs=1e-15)
    assert mean_over_batches(accs, sizes, "sample") == pytest.approx(0.64, abs=1e-15)
    assert mean_over_batches([0.3, 0.7], [5, 5], "batch") == mean_over_batches(
        [0.3, 0.7], [5, 5], "sample"
    )  # equal batches: the two averages agree
    with pytest.raises(ConfigError, match="dataset.metric_average='mean' is not valid"):
        mean_over_batches(accs, sizes, "mean")


class Oracle(torch.nn.Module):
    """A readout that predicts class 0 for every sample: right exactly where the label is 0."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], x.shape[1], 3)
        out[:, :, 0] = 1.0
        return out, []


@pytest.mark.parametrize("average,expected", [("batch", (1 + 0 + 1) / 3), ("sample", 4 / 7)])
def test_evaluate_averages_as_the_split_says(average, expected):
    """7 samples in batches of 3, 3, 1; labels 0 0 0 | 1 2 1 | 0: per-batch accuracy 1, 0, 1."""
    from convsnn.data import DenseSplit
    from convsnn.metrics import evaluate

    split = DenseSplit(torch.zeros(7, 4, 2), torch.tensor([0, 0, 0, 1, 2, 1, 0]))
    split.average = average
    got = evaluate(Oracle(), split, batch_size=3, loss_type="mot_ce", dt=1e-3)
    assert got["acc"] == pytest.approx(expected, abs=1e-12)


def test_setting_is_checked_and_defaults_to_batch(compose):
    from convsnn.checks import check
    from convsnn.data import metric_average

    assert metric_average(compose()) == "batch"
    assert metric_average(compose("dataset=shd")) == "batch"
    assert metric_average(compose("dataset.metric_average=sample")) == "sample"
    with pytest.raises(ConfigError, match="^dataset.metric_average='mean' is not valid; choose"):
        check(compose("dataset.metric_average=mean"))
