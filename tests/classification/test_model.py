"""The experiment's network: fast path equals the baseline, annealing, random streams."""

from __future__ import annotations

import pytest
import torch


def _net(cfg, method):
    from convsnn.checks import check
    from convsnn.model import build_network, network_shape, spike_fns
    from convsnn.seeds import generator, layer_generators

    check(cfg)
    geo = network_shape(cfg)
    gens = layer_generators(cfg.seed, "train_spikes", len(cfg.dataset.nb_filters))
    return build_network(cfg, geo, spike_fns(cfg, method, gens), generator(cfg.seed, "init")), geo


@pytest.mark.parametrize("method", ["superspike", "stochasticsuperspike"])
def test_fast_path_equals_reference_on_the_randman_network(compose, method):
    from sgtheory.losses import loss_fn

    cfg = compose(f"method={method}")
    results = []
    for reference in (False, True):
        net, geo = _net(cfg, method)
        x = (
            torch.rand(6, geo.nb_steps, 1, geo.nb_units, generator=torch.Generator().manual_seed(0))
            < 0.05
        ).float()
        out, spikes = net(x, reference=reference)
        loss = loss_fn(cfg.loss_type)(out, torch.arange(6))
        loss.backward()
        results.append((loss.detach(), [s.detach() for s in spikes], net.hidden[0].weight.grad))
    (l1, s1, g1), (l2, s2, g2) = results
    assert all(torch.equal(a, b) for a, b in zip(s1, s2))
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_beta_annealing_schedule(compose):
    from convsnn.model import beta_at

    cfg = compose("anneal=true", "anneal_start=5", "anneal_step=2", "anneal_interval=3")
    assert [beta_at(cfg, e) for e in (0, 4, 5, 7, 8, 11)] == [10, 10, 12, 12, 14, 16]
    assert beta_at(compose(), 100) == 10


def test_streams_are_independent_per_layer_and_purpose():
    from convsnn.seeds import derived_seed

    seeds = {derived_seed(1, p, *k) for p in ("train_spikes", "eval") for k in [(0,), (1,), (2, 0)]}
    assert len(seeds) == 6 and derived_seed(1, "eval", 3) == derived_seed(1, "eval", 3)
    assert derived_seed(2, "eval", 3) != derived_seed(1, "eval", 3)
