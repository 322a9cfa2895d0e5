"""The Python API: README's example runs as written, and the API speaks its own terms."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

import makemore

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "README's Python API section has one python block"
    return blocks[0]


def test_the_readme_example_runs_as_written(in_tmp):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example(), "README.md", "exec"), {})
    test_loss, samples, bits, loss = printed.getvalue().strip().splitlines()
    assert 1.5 < float(test_loss) < 2.6  # 300 steps of the bigram on the built-in names: well below ln(27) = 3.3
    assert len(eval(samples)) == 5 and float(bits) > 0
    assert float(loss) == pytest.approx(float(test_loss), abs=1e-6)
    assert (in_tmp / "checkpoints" / "api-bigram" / "model.safetensors").is_file()


def test_api_errors_name_arguments_not_flags(in_tmp):
    model = makemore.train(type="bigram", max_steps=20, eval_interval=10, out="b")
    with pytest.raises(makemore.MakemoreError, match=r"^`top_p` 2.0: must be above 0"):
        model.sample(3, top_p=2.0)
    with pytest.raises(makemore.MakemoreError, match=r"`max_new_tokens`: a text-mode option"):
        model.sample(3, max_new_tokens=5)
    with pytest.raises(makemore.MakemoreError, match=r"`lerning_rate`: not a training option"):
        makemore.train(type="bigram", out="c", lerning_rate=0.1)
    assert model.sample(3, seed=2) == makemore.load("b").sample(3, seed=2)
