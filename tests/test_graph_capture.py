"""The README's CUDA-graph training loop: it runs as written, and it trains as an eager loop does.

A seed held in device memory (a 0-d int64 tensor) is read by the kernels when they run, so a replayed
step draws the masks of the seed's current value; the eager loop below passes the same seeds as ints.
"""

import re
from pathlib import Path

import pytest
import torch

import estimators

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- tests/test_graph_capture.py runs this block"


def readme_block() -> str:
    text = README.read_text()
    after = text[text.index(MARKER) :]
    return re.search(r"```python\n(.*?)```", after, re.DOTALL).group(1)


def test_the_readme_names_this_test():
    assert "graph.replay()" in readme_block() and "seed.add_(1)" in readme_block()


@pytest.mark.parametrize("implementation", ["bmm", "shared"])
def test_a_cpu_tensor_seed_is_the_int_seed(implementation):
    model = estimators.build_model("small", seed=0)
    tokens = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    as_int = model(tokens, estimator="gumbel", implementation=implementation, seed=2**63 + 5)
    as_tensor = model(tokens, estimator="gumbel", implementation=implementation, seed=torch.tensor(5 - 2**63))
    assert torch.equal(as_int, as_tensor)


def test_a_seed_tensor_elsewhere_is_refused():
    model = estimators.build_model("small", seed=0)
    tokens = torch.zeros(1, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="model's device"):
        model(tokens, estimator="ste", implementation="bmm", seed=torch.tensor(1, device="meta"))
    with pytest.raises(ValueError, match="seed"):
        model(tokens, estimator="ste", implementation="bmm", seed=torch.tensor(1.0))


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@needs_cuda
@pytest.mark.parametrize("implementation", ["fused", "bmm"])
@pytest.mark.parametrize("estimator", ["ste", "gumbel", "gumbel_rao"])
def test_a_device_seed_draws_the_int_seeds_masks(estimator, implementation):
    model = estimators.build_model("seed", device="cuda", seed=0)
    tokens = torch.randint(0, 4096, (3, 32), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    for seed in (7, 2**63 + 9):
        device_seed = torch.tensor(seed - 2**64 if seed >= 2**63 else seed, device="cuda")
        results = []
        for value in (seed, device_seed):
            model.zero_grad(set_to_none=True)
            logits = model(tokens, estimator=estimator, implementation=implementation, seed=value)
            estimators.next_token_loss(logits, tokens).backward()
            results.append([logits.detach()] + [p.grad.clone() for p in model.parameters()])
        for got, want in zip(results[1], results[0], strict=True):
            assert torch.equal(got, want)


@needs_cuda
def test_the_readme_graph_loop_trains_as_the_eager_loop():
    namespace = {}
    exec(compile(readme_block(), str(README), "exec"), namespace)  # noqa: S102
    graphed = namespace["model"]
    assert int(namespace["seed"]) == 1234 + 3 + len(namespace["batches"])  # warm-up steps, then replays

    model = estimators.build_model("seed", device="cuda", seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    warm_up = [torch.zeros(16, 128, dtype=torch.int64, device="cuda")] * 3
    for seed, batch in enumerate(warm_up + namespace["batches"], start=1234):
        optimizer.zero_grad(set_to_none=True)
        logits = model(batch, estimator="ste", implementation="fused", seed=seed)
        loss = estimators.next_token_loss(logits, batch)
        loss.backward()
        optimizer.step()
    assert torch.allclose(namespace["loss"], loss, rtol=1e-4)
    for replayed, eager in zip(graphed.parameters(), model.parameters(), strict=True):
        # Adam's step is about lr wherever a gradient's sign flips: compare in norm, not elementwise.
        assert (replayed - eager).norm() <= 1e-5 * eager.norm() + 1e-6
