"""Every answer agrees with itself: flags, masks, text and the LLM's own decisions."""

import numpy as np
import torch

from helpers import decisive_model
from lasagna.api import Lasagna
from lasagna.config import JudgesConfig
from lasagna.judges import Judges
from lasagna.tokens import INS, NO_INS, token_ids

CLASSES = ["wall", "bed", "sky", "red circle", "blue square"]


def _image():
    return np.random.default_rng(3).integers(0, 256, (33, 47, 3), dtype=np.uint8)


def _lasagna(tokenizer, judged: bool):
    model = decisive_model(tokenizer, 3)
    ids = token_ids(tokenizer)
    model.set_token_ids(ids.ins, ids.pad, ids.no_ins)
    judges = Judges.for_model(model, JudgesConfig(presence_verifier=True), seed=0) if judged else None
    return Lasagna(model, tokenizer, judges)


def _said(text: str) -> list[bool]:
    """The decisions a class-list answer's text states, in order."""
    marks = [(i, True) for i in range(len(text)) if text.startswith(INS, i)]
    marks += [(i, False) for i in range(len(text)) if text.startswith(NO_INS, i)]
    return [yes for _, yes in sorted(marks)]


def test_a_judge_that_overrules_the_llm_is_seen_in_the_flags_the_text_and_llm_present(tiny_tokenizer):
    plain = _lasagna(tiny_tokenizer, judged=False).segment(_image(), classes=CLASSES, decoder="template")
    judged = _lasagna(tiny_tokenizer, judged=True)
    with torch.no_grad():  # the judge says "present" to everything, and the fusion listens to it alone
        judged.judges.verifier.fusion.weight.copy_(torch.tensor([[0.0, 1.0]]))
        judged.judges.verifier.name.weight.zero_()
        judged.judges.verifier.bias.fill_(30.0)
    pred = judged.segment(_image(), classes=CLASSES, decoder="template")
    assert [c.llm_present for c in pred.classes] == [c.present for c in plain.classes]
    assert _said(pred.text) == [c.present for c in pred.classes]  # the text states the final decisions
    overruled = [c for c in pred.classes if c.present != c.llm_present]
    assert overruled or all(c.llm_present for c in pred.classes)
    for c in pred.classes:
        assert (c.mask is not None and c.mask.any()) == c.present  # present has a mask, absent has none


def test_a_present_class_with_an_empty_mask_is_reported_absent_and_says_why(tiny_tokenizer, monkeypatch):
    lasagna = _lasagna(tiny_tokenizer, judged=False)
    engine = lasagna.engine
    monkeypatch.setattr(engine, "slot_low_res", lambda enc, hiddens: torch.full((len(hiddens), 16, 16), -5.0))
    pred = lasagna.segment(_image(), classes=CLASSES, decoder="template")
    llm_said = [c.llm_present for c in pred.classes]
    assert any(llm_said) and not any(c.present for c in pred.classes)
    assert len(pred.warnings) == sum(llm_said) and "mask is empty" in pred.warnings[0]
    assert _said(pred.text) == [False] * len(CLASSES)


def test_chat_never_answers_with_a_mask_token(tiny_tokenizer):
    answer = _lasagna(tiny_tokenizer, judged=False).chat(_image(), "What is in the picture?", max_new_tokens=40)
    assert INS not in answer and NO_INS not in answer


def test_chat_runs_without_gradients(tiny_tokenizer, monkeypatch):
    """`Engine.chat` encodes the image itself: under autograd its activations would be kept for a backward pass."""
    lasagna = _lasagna(tiny_tokenizer, judged=False)
    seen = []
    encode = lasagna.engine.encode_image

    def spy(*args, **kwargs):
        seen.append(torch.is_grad_enabled())
        return encode(*args, **kwargs)

    monkeypatch.setattr(lasagna.engine, "encode_image", spy)
    lasagna.chat(_image(), "What is in the picture?", max_new_tokens=4)
    assert seen == [False]
