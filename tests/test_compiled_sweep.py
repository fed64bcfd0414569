"""``compiled`` in a sweep: every estimator x three batch sizes x two temperatures, with and without autocast.

One process, as a notebook or a hyper-parameter sweep runs it. dynamo's
default recompile limit (8) used to end such a process with
FailOnRecompileLimitHit; ``compiled`` compiles with ``fullgraph=True``, so a
graph break or a fall-back to eager would raise instead of passing silently.
"""

import pytest
import torch
from torch._dynamo.utils import counters

import estimators
from benchmarks.workload import random_tokens
from estimators.implementations import COMPILED_GRAPH_LIMIT
from estimators.model import next_token_loss

from conftest import CONFIGS

BATCHES = (2, 3, 5)
TEMPERATURES = (0.5, 2.0)
# At most, per estimator and precision: the first batch size compiles a static graph, the second one a
# graph dynamic in the batch, which serves the third; each temperature at most doubles that (torch 2.13
# makes the temperature an input after its first change: 12 graphs in all).
EXPECTED_GRAPHS = len(estimators.ESTIMATORS) * 2 * 2 * len(TEMPERATURES)

pytestmark = pytest.mark.slow


def test_compiled_survives_a_sweep_and_matches_bmm():
    torch._dynamo.reset()
    counters.clear()
    config = CONFIGS["tiny"]
    model = estimators.build_model(config, seed=0)
    for autocast in (False, True):
        for estimator in estimators.ESTIMATORS:
            for tau in TEMPERATURES:
                for batch in BATCHES:
                    tokens = random_tokens(config, batch, seed=batch)
                    kwargs = dict(estimator=estimator, seed=7, tau=tau)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                        got = model(tokens, implementation="compiled", **kwargs)
                        want = model(tokens, implementation="bmm", **kwargs)
                    next_token_loss(got.float(), tokens).backward()  # the backward graph compiles too
                    tolerance = 2e-2 if autocast else 1e-5
                    torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)
    graphs = counters["stats"]["unique_graphs"]
    print(f"compiled: {graphs} graphs for {2 * len(estimators.ESTIMATORS) * len(TEMPERATURES) * len(BATCHES)} cases")
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert graphs <= EXPECTED_GRAPHS <= COMPILED_GRAPH_LIMIT
