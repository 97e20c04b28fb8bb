"""A run's checkpoint folders on disk: what a damaged one says when a resume or an export reads it."""

from __future__ import annotations

import pytest

from lasagna.train.state import load_checkpoint_weights


@pytest.mark.parametrize("text", ['{"step": 45', "[1, 2]"])
def test_a_damaged_state_json_is_named(tmp_path, text):
    step = tmp_path / "checkpoints" / "step-0000045"
    step.mkdir(parents=True)
    (step / "state.json").write_text(text)
    with pytest.raises(ValueError, match=rf"{step / 'state.json'}: not the JSON object a checkpoint writes"):
        load_checkpoint_weights(step, model=None, init_from=None)
