"""`lasagna convert lisa`: a tiny model in LISA's released layout ([SEG] token, LISA key names) converts and answers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from test_official import CORPUS, write_clip, write_release
from transformers import AutoTokenizer

from helpers import write_released_tokenizer
from lasagna.checkpoint import load_pretrained
from lasagna.cli import main
from lasagna.config import preset
from lasagna.convert.keymap import KeyMapError
from lasagna.convert.lisa import NOTE, convert_lisa
from lasagna.convert.official import convert_official
from lasagna.infer.engine import query_question
from lasagna.model.lasagna import LasagnaModel
from lasagna.prompts import render
from lasagna.tokenization import encode
from lasagna.tokens import token_ids

LISA_ADDED = ("[SEG]", "<im_start>", "<im_end>")  # LISA's train_ds.py order: [SEG] first, then the image wrap


def _lisa_tokenizer(folder):
    """A tiny sentencepiece tokenizer laid out as LISA's release: tokenizer.model + added_tokens.json with [SEG]."""
    folder.mkdir()
    chat = render([(query_question("the dog"), "Sure, it is the dog.")], "</s>", wrap_image=False)
    base = write_released_tokenizer(folder, [*CORPUS, chat] * 20, vocab_size=120) - 7  # less the LaSagnA tokens
    (folder / "added_tokens.json").write_text(json.dumps({t: base + i for i, t in enumerate(LISA_ADDED)}))
    return AutoTokenizer.from_pretrained(str(folder)), base


def _answers_one_seg(model: LasagnaModel, tokenizer, seg: int) -> None:
    """Make a random tiny model answer any query "[SEG]</s>": the prompt's last token and [SEG] get large input
    rows (so the last hidden state points along them), and the output rows of [SEG] and eos point along those."""
    text = render([(query_question("the dog"), None)], tokenizer.eos_token, wrap_image=True)
    last = encode(tokenizer, text, "llama431")[-1]
    directions = torch.linalg.qr(torch.randn(model.cfg.llm.hidden_size, 2, generator=torch.Generator().manual_seed(3)))
    u_last, u_seg = directions[0].T
    with torch.no_grad():
        embed, head = model.llm.get_input_embeddings().weight, model.llm.get_output_embeddings().weight
        embed[last], embed[seg] = 50 * u_last, 50 * u_seg
        head.zero_()
        head[seg], head[tokenizer.eos_token_id] = 10 * u_last, 10 * u_seg


@pytest.fixture
def lisa_release(tmp_path):
    tokenizer, base = _lisa_tokenizer(tmp_path / "tok")
    cfg = preset("tiny")
    cfg.llm.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    model = LasagnaModel(cfg).eval()
    seg = tokenizer.convert_tokens_to_ids("[SEG]")
    assert seg == base
    _answers_one_seg(model, tokenizer, seg)
    write_release(model, tmp_path / "tok", tmp_path / "release")
    config = json.loads((tmp_path / "release" / "config.json").read_text())
    config["architectures"] = ["LISAForCausalLM"]
    (tmp_path / "release" / "config.json").write_text(json.dumps(config))
    write_clip(model, tmp_path / "clip")
    return model, seg, tmp_path


def test_lisa_release_converts_and_answers_a_query(lisa_release, capsys):
    model, seg, tmp = lisa_release
    out = tmp / "converted"
    argv = ["convert", "lisa", "--src", str(tmp / "release"), "--clip", str(tmp / "clip"), "--out", str(out)]
    assert main([*argv, "--dtype", "fp32", "--sam-decoder-heads", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"[SEG] (id {seg}) is now <ins>" in printed
    assert all(f"added {t} as an untrained row" in printed for t in ("<no_ins>", "<cat_start>", "<semantic>"))

    converted, tokenizer = load_pretrained(out)
    ids = token_ids(tokenizer)
    assert ids.ins == seg and ids.im_start == seg + 1  # LISA's own ids are kept
    assert (ids.cat_start, ids.cat_end, ids.semantic, ids.no_ins) == (seg + 3, seg + 4, seg + 5, seg + 6)
    rows = converted.llm.get_input_embeddings().weight
    original = model.llm.get_input_embeddings().weight
    assert rows.shape[0] == original.shape[0] + 4 and torch.equal(rows[: original.shape[0]], original)
    assert torch.allclose(rows[-1], original.mean(0))
    assert not converted.llm.get_output_embeddings().weight[-4:].any()  # never chosen
    for name, tensor in model.sam.state_dict().items():
        assert torch.equal(converted.sam.state_dict()[name], tensor), name
    assert json.loads((out / NOTE).read_text())["renamed"] == {"[SEG]": "<ins>", "id": seg}

    Image.fromarray(np.full((40, 56, 3), 90, np.uint8)).save(tmp / "photo.png")
    seg_out = tmp / "segment"
    assert (
        main(["segment", str(tmp / "photo.png"), "--model", str(out), "--query", "the dog", "--out", str(seg_out)]) == 0
    )
    assert "1 mask(s)" in capsys.readouterr().out  # one target per query, as LISA answers
    result = json.loads((seg_out / "photo" / "result.json").read_text())
    assert len(result["masks"]) == 1 and re.match(r"\s*<ins>", result["answer"])


def test_lisa_errors_name_what_cannot_be_mapped(lisa_release, capsys):
    _, _, tmp = lisa_release
    with pytest.raises(ValueError, match="convert lisa"):  # the LaSagnA converter points at this one
        convert_official(tmp / "release", tmp / "o1", tmp / "clip", sam_decoder_heads=2)
    shard = tmp / "release" / "pytorch_model-00001-of-00002.bin"
    state = torch.load(shard, weights_only=True)
    state["model.seg_head.weight"] = torch.zeros(3)
    torch.save(state, shard)
    index = tmp / "release" / "pytorch_model.bin.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["model.seg_head.weight"] = shard.name
    index.write_text(json.dumps(data))
    with pytest.raises(KeyMapError, match=re.escape("unexpected (no rule): model.seg_head.weight")):
        convert_lisa(tmp / "release", tmp / "o2", tmp / "clip", sam_decoder_heads=2)
    assert not (tmp / "o2").exists()
