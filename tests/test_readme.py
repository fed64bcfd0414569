"""The README's package examples run as written: every python block after a "tests/test_readme.py runs this
block" marker, in order, in one namespace (a later block uses an earlier one's names), on the GPU where there is
one, else on the CPU."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"

MARKER = "<!-- tests/test_readme.py runs this block"


def readme_blocks() -> list[str]:
    """The marked blocks' code, in the README's order."""
    return re.findall(re.escape(MARKER) + r"[^\n]*-->\n```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_the_marked_blocks_are_the_package_examples():
    blocks = readme_blocks()
    assert len(blocks) == README.read_text().count(MARKER) == 2
    assert "build_model" in blocks[0] and "torch.autocast" in blocks[1]


def test_the_readme_package_examples_run():
    namespace = {}
    for number, block in enumerate(readme_blocks()):
        exec(compile(block, f"{README} (marked block {number})", "exec"), namespace)  # noqa: S102
    model, tokens = namespace["model"], namespace["tokens"]
    assert namespace["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert namespace["logits"].shape == (*tokens.shape, model.config.vocab_size)
    assert namespace["d"].shape == (8, 3) and torch.equal(namespace["d"].sum(-1), torch.ones(8))
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
