from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import decisive_model
from lasagna import prompts
from lasagna.api import Lasagna
from lasagna.infer.decode import decode_free, decode_template, encode_prefix
from lasagna.infer.semantic import UNLABELLED, merge_semantic
from lasagna.model.mllm import expand_images
from lasagna.preprocess import prepare
from lasagna.prompts import semantic_question
from lasagna.tokenization import encode
from lasagna.tokens import token_ids

CLASSES = ["wall", "bed", "sky", "red circle", "blue square", "green star", "tree", "floor", "person"]


def _image(seed=0, h=40, w=56):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _template_rows(tokenizer, chunk):
    q = semantic_question(chunk)
    prompt = encode(tokenizer, prompts.render([(q, None)], tokenizer.eos_token), "plain")
    answer = "".join(f"{c}<ins>" for c in chunk)
    full = encode(tokenizer, prompts.render([(q, answer)], tokenizer.eos_token), "plain")
    assert full[: len(prompt)] == prompt
    return full, len(prompt)


def _constrained_greedy(model, enc, full, start, ids):
    """Reference: token by token, full recomputation, decisions restricted to {<ins>, <no_ins>}."""
    seq = list(full[:start])
    decisions, hiddens = [], []
    for pos in range(start, len(full)):
        if full[pos] in (ids.ins, ids.no_ins):
            x = torch.tensor([seq])
            ex = expand_images(model.embed_tokens, x, torch.ones_like(x), enc.llm_feats, model.pad_id)
            h = model.llm.get_decoder()(inputs_embeds=ex.embeds, use_cache=False).last_hidden_state[0, -1]
            logits = model.llm.get_output_embeddings()(h)
            tok = ids.ins if logits[ids.ins] >= logits[ids.no_ins] else ids.no_ins
            decisions.append(tok == ids.ins)
            hiddens.append(h)
            seq.append(tok)
        else:
            seq.append(full[pos])
    return decisions, hiddens


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_template_decoding_equals_constrained_greedy(tiny_tokenizer, seed):
    model = decisive_model(tiny_tokenizer, seed)
    api = Lasagna(model, tiny_tokenizer)
    ids = token_ids(tiny_tokenizer)
    enc, _, _ = api.engine.encode_image(_image(seed))
    chunks = [CLASSES[:4], CLASSES[4:]]
    rows = [_template_rows(tiny_tokenizer, c) for c in chunks]
    shared = 0
    while all(r[0][shared] == rows[0][0][shared] for r in rows):
        shared += 1
    prefix = encode_prefix(model, enc, 0, rows[0][0][:shared])
    results = decode_template(model, prefix, [r[0][shared:] for r in rows], [r[1] - shared for r in rows], ids)
    with torch.no_grad():
        for (full, start), res in zip(rows, results, strict=True):
            want, hiddens = _constrained_greedy(model, enc, full, start, ids)
            assert [d.present for d in res.decisions] == want
            got_h = [d.hidden for d in res.decisions if d.present]
            want_h = [h for h, p in zip(hiddens, want, strict=True) if p]
            for a, b in zip(got_h, want_h, strict=True):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_free_decoding_matches_recomputed_greedy(tiny_tokenizer):
    model = decisive_model(tiny_tokenizer, 5)
    ids = token_ids(tiny_tokenizer)
    api = Lasagna(model, tiny_tokenizer)
    enc, _, _ = api.engine.encode_image(_image(5))
    prompt = encode(tiny_tokenizer, prompts.render([(semantic_question(CLASSES[:3]), None)], "</s>"), "plain")
    prefix = encode_prefix(model, enc, 0, prompt[:-1])
    res = decode_free(model, prefix, [prompt[-1:]], ids, max_new_tokens=12)[0]
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(len(res.ids) + (1 if res.finished and len(res.ids) < 12 else 0)):
            x = torch.tensor([seq])
            ex = expand_images(model.embed_tokens, x, torch.ones_like(x), enc.llm_feats, model.pad_id)
            h = model.llm.get_decoder()(inputs_embeds=ex.embeds, use_cache=False).last_hidden_state[0, -1]
            tok = int(model.llm.get_output_embeddings()(h).argmax())
            if tok == ids.eos:
                break
            seq.append(tok)
    assert res.ids == seq[len(prompt) :]


def test_chunking_does_not_change_answers_of_a_chunk_invariantdecisive_model(tiny_tokenizer):
    model = decisive_model(tiny_tokenizer, 7)
    with torch.no_grad():  # no attention output: every state depends on its own token only
        for layer in model.llm.model.layers:
            layer.self_attn.o_proj.weight.zero_()
    api = Lasagna(model, tiny_tokenizer)
    image = _image(7)
    whole = api.segment(image, classes=CLASSES, chunk_size=len(CLASSES), decoder="template")
    for size in (1, 2, 4):
        chunked = api.segment(image, classes=CLASSES, chunk_size=size, decoder="template")
        assert chunked.present == whole.present
        assert chunked.absent == whole.absent


def test_segment_results_cover_every_class_at_image_size(tiny_tokenizer):
    api = Lasagna(decisive_model(tiny_tokenizer, 3), tiny_tokenizer)
    pred = api.segment(_image(3, 33, 47), classes=CLASSES[:5], chunk_size=2, decoder="template")
    assert [c.name for c in pred.classes] == CLASSES[:5]
    for c in pred.classes:
        assert 0.0 <= c.score <= 1.0
        assert (c.mask is not None) == c.present
        if c.present:
            assert c.mask.shape == (33, 47) and c.mask.dtype == bool
    sem = pred.semantic_map()
    assert sem.shape == (33, 47)
    assert set(np.unique(sem)) <= {UNLABELLED, *range(5)}


def test_a_query_gets_one_mask_per_ins_and_a_score_per_decision(tiny_tokenizer):
    api = Lasagna(decisive_model(tiny_tokenizer, 3), tiny_tokenizer)
    pred = api.segment(_image(3, 33, 47), query="the red circle")
    ins, no_ins = pred.text.count("<ins>"), pred.text.count("<no_ins>")
    assert ins + no_ins > 0 and len(pred.scores) == ins + no_ins and len(pred.masks) == ins
    assert all(0.0 <= s <= 1.0 for s in pred.scores)
    assert all(m.shape == (33, 47) and m.dtype == bool for m in pred.masks)


@pytest.mark.parametrize(
    "classes, match",
    [([], "empty"), (["a<ins>"], "reserved"), (["wall", "Wall"], "twice"), (["a, b"], "comma"), ("wall", "list")],
)
def test_bad_class_lists_are_clear_errors(tiny_tokenizer, classes, match):
    api = Lasagna(decisive_model(tiny_tokenizer, 0), tiny_tokenizer)
    with pytest.raises(ValueError, match=match):
        api.segment(_image(), classes=classes)


def test_bad_images_are_clear_errors(tiny_tokenizer, tmp_path):
    api = Lasagna(decisive_model(tiny_tokenizer, 0), tiny_tokenizer)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match=r"broken\.png"):
        api.segment(broken, classes=["wall"])
    with pytest.raises(ValueError, match="empty"):
        api.segment(np.zeros((0, 4, 3), np.uint8), classes=["wall"])
    with pytest.raises(ValueError, match="exactly one"):
        api.segment(_image(), classes=["wall"], query="the wall")


def test_a_prepared_image_gives_the_answers_of_its_array_bit_for_bit(tiny_tokenizer):
    api = Lasagna(decisive_model(tiny_tokenizer, 3), tiny_tokenizer)
    image = _image(3, 33, 47)
    prepared = prepare(image, api.engine.model.cfg.preprocess)
    (raw, raw_resized, raw_size), (pre, pre_resized, pre_size) = map(api.engine.encode_image, (image, prepared))
    assert pre_resized == raw_resized and pre_size == raw_size == (33, 47)
    tensors = [(e.llm_feats, e.sam_embeds, *e.sam_skips) for e in (raw, pre)]
    assert all(torch.equal(a, b) for a, b in zip(*tensors, strict=True))
    alone, given = (api.engine.segment_classes(x, CLASSES, chunk_size=4) for x in (image, prepared))
    assert alone.present and [c.score for c in given.classes] == [c.score for c in alone.classes]
    assert torch.equal(given.logits, alone.logits)
    assert api.engine.segment_query(prepared, "the red circle").text == api.segment(image, query="the red circle").text


def test_an_image_prepared_for_another_preprocessing_is_refused(tiny_tokenizer):
    api = Lasagna(decisive_model(tiny_tokenizer, 0), tiny_tokenizer)
    other = replace(api.engine.model.cfg.preprocess, sam_mean=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="prepared with"):
        api.engine.encode_image(prepare(_image(), other))


def test_image_kinds_are_accepted(tiny_tokenizer):
    from PIL import Image

    from lasagna.preprocess import to_rgb

    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_rgb(gray).shape == (3, 4, 3)
    assert to_rgb(np.zeros((3, 4, 4), np.uint8)).shape == (3, 4, 3)
    sixteen = np.full((3, 4), 65535, np.uint16)
    assert to_rgb(sixteen).max() == 255
    rotated = Image.new("RGB", (4, 3))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees: width and height swap
    rotated.info["exif"] = exif.tobytes()
    rotated = Image.open(__import__("io").BytesIO(_png_with_exif(rotated, exif)))
    assert to_rgb(rotated).shape == (4, 3, 3)


def _png_with_exif(image, exif):
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG", exif=exif.tobytes())
    return buf.getvalue()


def test_semantic_merge_leaves_low_pixels_unlabelled():
    logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]], [[1.0, 3.0], [0.4, -2.0]]])
    out = merge_semantic(logits, torch.tensor([7, 9]))
    assert out.tolist() == [[7, 9], [7, UNLABELLED]]
    # a class barely answered present yields the overlap to a sure one, unless its own mask is far surer there
    scored = merge_semantic(logits, torch.tensor([7, 9]), scores=torch.tensor([0.3, 1.0]))
    assert scored.tolist() == [[9, 9], [9, UNLABELLED]]
    sure = merge_semantic(torch.tensor([[[6.0]], [[0.2]]]), torch.tensor([7, 9]), scores=torch.tensor([0.6, 1.0]))
    assert sure.tolist() == [[7]]
    with pytest.raises(ValueError, match="one score per mask"):
        merge_semantic(logits, torch.tensor([7, 9]), scores=torch.tensor([1.0]))


def test_name_ids_are_the_answer_since_the_previous_decision():
    from lasagna.infer.decode import Decision, RowResult
    from lasagna.infer.engine import name_ids

    row = RowResult(ids=[5, 6, 10, 7, 11, 10], decisions=[Decision(2, True, 0.9), Decision(4, False, 0.1)])
    row.decisions.append(Decision(5, True, 0.8))
    assert name_ids(row) == [[5, 6], [7], []]


def test_several_queries_of_one_image_are_answered_as_each_alone_with_one_encoding(tiny_tokenizer, monkeypatch):
    engine = Lasagna(decisive_model(tiny_tokenizer, 3), tiny_tokenizer).engine
    image, queries = _image(3, 33, 47), ["the red circle", "the star left of the blue square", "the stars"]
    alone = [engine.segment_query(image, q) for q in queries]
    encode = engine.encode_image
    encoded = []
    monkeypatch.setattr(engine, "encode_image", lambda image: encoded.append(1) or encode(image))
    together = engine.segment_queries(image, queries)
    assert len(encoded) == 1 and [p.text for p in together] == [p.text for p in alone]
    assert [p.scores for p in together] == [pytest.approx(p.scores) for p in alone]
    assert all(len(a.masks) == len(b.masks) for a, b in zip(alone, together, strict=True))
    monkeypatch.setattr("lasagna.infer.engine.QUERY_BATCH", 2)  # a batch of two, then one of one
    assert [p.text for p in engine.segment_queries(image, queries)] == [p.text for p in alone]
    encoded.clear()
    with pytest.raises(ValueError, match="query is empty"):
        engine.segment_queries(image, ["the red circle", " "])
    assert not encoded  # refused before any work
    with pytest.raises(ValueError, match="list of strings"):
        Lasagna(engine.model, tiny_tokenizer).segment_queries(image, "the red circle")
