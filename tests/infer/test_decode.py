"""infer/decode.py: template decoding restarts per row, free decoding stops each row at its own end, rows run in
batches of bounded size (each a copy of the one prefix), grouped by length."""

import itertools

import numpy as np
import pytest
import torch

from helpers import decisive_model
from lasagna import prompts
from lasagna.api import Lasagna
from lasagna.infer import decode
from lasagna.infer import engine as engine_module
from lasagna.infer.decode import batches, decode_free, decode_template, encode_prefix
from lasagna.prompts import semantic_question
from lasagna.tokenization import encode
from lasagna.tokens import token_ids

WORDS = ["wall", "bed", "sky", "red circle", "blue square", "green star", "tree", "floor", "person"]


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (40, 56, 3), dtype=np.uint8)


@pytest.fixture
def feeds(monkeypatch):
    """Every LLM call after the prefix: (rows, columns, real tokens of each row)."""
    calls = []
    real = decode._Rows.feed

    def spy(self, ids, mask):
        calls.append((ids.shape[0], ids.shape[1], mask.sum(1).tolist()))
        return real(self, ids, mask)

    monkeypatch.setattr(decode._Rows, "feed", spy)
    return calls


def _row(tokenizer, chunk, present):
    q = semantic_question(chunk)
    prompt = encode(tokenizer, prompts.render([(q, None)], tokenizer.eos_token), "plain")
    full = encode(
        tokenizer, prompts.render([(q, prompts.semantic_answer(chunk, present))], tokenizer.eos_token), "plain"
    )
    return full, len(prompt)


def test_each_row_restarts_from_its_own_first_disagreement_and_a_row_that_holds_stops(tiny_tokenizer, feeds):
    model = decisive_model(tiny_tokenizer, 1)
    ids = token_ids(tiny_tokenizer)
    enc, _, _ = Lasagna(model, tiny_tokenizer).engine.encode_image(_image(1))
    chunks = [WORDS[:4], WORDS[4:8], WORDS[1:5], WORDS[3:7]]
    rows = [_row(tiny_tokenizer, c, [False] * len(c)) for c in chunks]
    shared = min(engine_module._common_prefix([r for r, _ in rows]), *(s for _, s in rows))
    prefix = encode_prefix(model, enc, 0, rows[0][0][:shared])

    def run(guesses):
        made = [_row(tiny_tokenizer, c, g) for c, g in zip(chunks, guesses, strict=True)]
        return decode_template(model, prefix, [r[shared:] for r, _ in made], [s - shared for _, s in made], ids), made

    truth, _ = run([[False] * len(c) for c in chunks])
    answers = [[d.present for d in r.decisions] for r in truth]
    flip = [not a for a in answers[1][-2:-1]]
    # row 0 guessed right; row 1 wrong at its next-to-last decision; row 2 wrong at its first; row 3 at its last only
    guesses = [
        answers[0],
        [*answers[1][:-2], *flip, answers[1][-1]],
        [not answers[2][0], *answers[2][1:]],
        [*answers[3][:-1], not answers[3][-1]],
    ]
    feeds.clear()
    got, made = run(guesses)
    assert [[d.present for d in r.decisions] for r in got] == answers  # the same decisions, whatever the guess
    for a, b in zip(got, truth, strict=True):
        for x, y in zip(a.decisions, b.decisions, strict=True):
            assert x.score == pytest.approx(y.score, abs=1e-5)
            torch.testing.assert_close(x.hidden, y.hidden, atol=1e-4, rtol=1e-4)
    assert len(feeds) == 2  # one pass over all, one re-pass of the rows that disagreed
    (rows_1, _, real_1), (rows_2, _, real_2) = feeds
    # rows 0 and 3 stopped after the first pass: row 0 held, and row 3's fixed last decision has none after it
    assert rows_1 == 4 and rows_2 == 2
    slot_of = [[d.index + s - shared for d in r.decisions] for r, (_, s) in zip(got, made, strict=True)]
    # a row is fed up to its last decision (the token that predicts it), not the decision token and its eos
    assert sorted(real_1) == sorted(slots[-1] for slots in slot_of)
    # each re-runs from its own first disagreement: row 1 from its next-to-last decision, row 2 from its first
    assert sorted(real_2) == sorted([slot_of[1][-1] - slot_of[1][-2], slot_of[2][-1] - slot_of[2][0]])


def test_free_decoding_stops_every_row_at_its_own_budget(tiny_tokenizer, feeds):
    model = decisive_model(tiny_tokenizer, 2)
    ids = token_ids(tiny_tokenizer)
    enc, _, _ = Lasagna(model, tiny_tokenizer).engine.encode_image(_image(2))
    prompt = encode(tiny_tokenizer, prompts.render([(semantic_question(WORDS[:3]), None)], "</s>"), "plain")
    prefix = encode_prefix(model, enc, 0, prompt[:-1])
    out = decode_free(model, prefix, [prompt[-1:]] * 2, ids, max_new_tokens=[3, 10], banned=(ids.eos,))
    assert [len(r.ids) for r in out] == [3, 10] and not any(r.finished for r in out)
    assert [rows for rows, _, _ in feeds] == [2, 2, 2] + [1] * 7  # a row that is done leaves the batch
    alone = decode_free(model, prefix, [prompt[-1:]], ids, max_new_tokens=10, banned=(ids.eos,))[0]
    assert alone.ids == out[1].ids
    # a row that writes `max_run` tokens without a decision is naming nothing of its chunk any more: it stops
    wordy = decode_free(model, prefix, [prompt[-1:]] * 2, ids, [50, 50], (ids.eos, ids.ins, ids.no_ins), max_run=[4, 6])
    assert [len(r.ids) for r in wordy] == [4, 6] and wordy[1].ids[:4] == wordy[0].ids


def test_a_chunk_of_64_free_decodes_at_most_its_answer_and_a_margin(tiny_tokenizer, monkeypatch):
    model = decisive_model(tiny_tokenizer, 4)
    lasagna = Lasagna(model, tiny_tokenizer)
    names = [f"{w} {i}" for i, w in enumerate(WORDS * 8)][:64]
    monkeypatch.setattr(model.cfg.llm, "max_position_embeddings", 2048)  # rotary positions: any length runs
    limits = []
    real = engine_module.decode_free
    monkeypatch.setattr(
        engine_module,
        "decode_free",
        lambda *a, **k: limits.append((k["max_new_tokens"], k["max_run"])) or real(*a, **k),
    )
    rows = lasagna.engine.chunk_rows([names], "template")
    answer = rows.rows[0][rows.starts[0] :]  # every name and its marker, then the end of sequence
    ins, no_ins = token_ids(tiny_tokenizer).ins, token_ids(tiny_tokenizer).no_ins
    marks = [-1] + [i for i, t in enumerate(answer) if t in (ins, no_ins)]
    longest = max(b - a for a, b in itertools.pairwise(marks))  # a name and its marker
    pred = lasagna.segment(_image(4), classes=names, chunk_size=64, decoder="free")
    margin = engine_module.FREE_MARGIN
    assert limits == [([len(answer) + margin], [longest + margin])]
    assert len(pred.text) > 0 and len(answer) + margin < 2 * len(answer)  # the old budget: twice the prompt, + 16


def test_batches_are_bounded_longest_first_and_closed_before_a_much_shorter_row():
    assert batches([5, 9, 9, 8, 9], max_rows=2) == [[1, 2], [4, 3], [0]]
    assert batches([10, 10, 10, 7], max_rows=8) == [[0, 1, 2], [3]]  # 7 < 0.75 * 10: padded, it would waste 30%
    with pytest.raises(ValueError, match="max_rows"):
        batches([1], max_rows=0)


def test_a_long_list_runs_in_bounded_batches_and_answers_as_unbounded(tiny_tokenizer, feeds, monkeypatch):
    model = decisive_model(tiny_tokenizer, 3)
    lasagna = Lasagna(model, tiny_tokenizer)
    names = [f"{w} {i}" for i, w in enumerate(WORDS * 34)]  # 306 names, 39 chunks of 8
    monkeypatch.setattr(decode, "ROW_BATCH", 1000)
    monkeypatch.setattr(decode, "PADDING_SHARE", 1.0)  # rows of any length share a batch: one batch of all
    whole = lasagna.segment(_image(3), classes=names, chunk_size=8, decoder="template")
    assert max(rows for rows, _, _ in feeds) == 39  # one batch: the unbounded run
    feeds.clear()
    masks = []
    real = lasagna.model.sam.decode
    monkeypatch.setattr(lasagna.model.sam, "decode", lambda e, p, s=(): masks.append(len(p)) or real(e, p, s))
    monkeypatch.setattr(engine_module, "MASK_BATCH", 5)
    monkeypatch.setattr(decode, "ROW_BATCH", 4)
    bounded = lasagna.segment(_image(3), classes=names, chunk_size=8, decoder="template")
    assert max(rows for rows, _, _ in feeds) <= 4 and max(masks) <= 5
    assert sum(masks) == len(bounded.present) > 0
    assert bounded.present == whole.present and bounded.text == whole.text
    for a, b in zip(bounded.classes, whole.classes, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-4)


@pytest.mark.parametrize(("rows", "shown"), [(decode.PROGRESS_ROWS, False), (decode.PROGRESS_ROWS + 1, True)])
def test_a_long_list_shows_progress_where_a_terminal_can_see_it(monkeypatch, rows, shown):
    made = []

    class Bar:
        def __init__(self, **kwargs):
            made.append(kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            made[-1]["done"] = made[-1].get("done", 0) + n

    monkeypatch.setattr(decode, "tqdm", Bar)
    assert sum(len(g) for g in decode._batched([[1, 2]] * rows, 8, None)) == rows
    # None: tqdm's own rule, a bar only where stderr is a terminal; True: none at all
    assert made[0]["disable"] is (None if shown else True) and made[0]["done"] == rows
