"""``slmc.graph.kv_cache_fit``: cache specs and samples that follow a head-pruned graph."""

import pytest
import torch

from slmc.graph.kv_cache_fit import fit_sample, fit_samples, graph_kv_cache
from slmc.errors import InputError
from slmc.models import tiny_lm
from slmc.spec.pass_registry import PassContext, get_pass


@pytest.fixture(scope="module")
def graphs(host_target):
    """tiny-lm traced, and with one of its 4 heads removed (KV cache [2, 1, 3, P, 32])."""
    from slmc.graph.ir import trace

    original = trace(tiny_lm.build())
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    empty = torch.zeros(2, 1, 4, 1, 32)
    definition = get_pass("prune_channels")
    config = definition.config(mlp_channels=0.0, heads=0.25)
    return original, definition.run(original.clone(), config, PassContext(host_target, [(ids, empty, empty)])).graph


def test_cache_spec_follows_the_graph(graphs):
    tiny_lm_graph, pruned = graphs
    cache = tiny_lm.build().kv_cache
    assert graph_kv_cache(tiny_lm_graph, cache) is cache
    assert graph_kv_cache(pruned, cache) == type(cache)(2, 3, 32, cache.max_context)
    assert graph_kv_cache(pruned, None) is None


def test_empty_caches_are_refitted_exactly(graphs, lm_inputs):
    tiny_lm_graph, pruned = graphs
    ids, keys, values = lm_inputs(5, past=1)
    fitted = fit_sample(pruned, (ids, keys, values))
    assert fitted[0] is ids and fitted[1].shape == (2, 1, 3, 1, 32) and not fitted[1].any()
    assert fit_samples(tiny_lm_graph, [(ids, keys, values)])[0][1] is keys  # nothing to refit
    back = fit_sample(tiny_lm_graph, fitted)  # and back to the original's 4 heads
    assert back[2].shape == (2, 1, 4, 1, 32)
    # the sink slot is never attended to: zeros there change nothing
    torch.testing.assert_close(pruned.run(*fitted)[0], pruned.run(ids, keys[:, :, :3], values[:, :, :3])[0])


def test_a_filled_cache_of_the_wrong_width_is_rejected(graphs, lm_inputs):
    with pytest.raises(InputError, match="input 'past_keys' of shape \\[2, 1, 4, 3, 32\\] does not fit"):
        fit_sample(graphs[1], lm_inputs(2, past=3))
