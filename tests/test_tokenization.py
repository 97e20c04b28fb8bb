"""Prompt tokenization: 4.31 parity on a tiny released-layout LLaMA tokenizer, the plain tokenizer, label masks."""

from __future__ import annotations

import os
import random
import shutil
import string
import subprocess
import sys

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from helpers import RELEASED_ORDER, write_released_layout, write_released_tokenizer
from lasagna.prompts import SYSTEM, render
from lasagna.tokenization import (
    PLAIN_SPECIALS,
    build_plain_tokenizer,
    decode_span,
    encode,
    encode_dialogue,
)
from lasagna.tokens import ALL_TOKENS, IGNORE_INDEX, IMAGE, IMAGE_TOKEN_ID, find_special, register_tokens, token_ids

# The released added_tokens.json order (spec §2.2): ids vocab .. vocab+6.
SEM_QUESTION = "<image>\n<semantic>Segment this image.<cat_start> wall, bed <cat_end>"
SEM_ANSWER = "wall<ins>bed<no_ins>"
CLASSES = ["wall", "bed", "sky", "floor", "circle", "square", "triangle", "star"]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """(tokenizer, sentencepiece processor, folder): a tiny sentencepiece BPE in the LaSagnA-7B tokenizer layout."""
    folder = tmp_path_factory.mktemp("released")
    lines = [SYSTEM, "USER: Segment this image. ASSISTANT: wall bed", "Which is present? " + ", ".join(CLASSES)]
    write_released_tokenizer(folder, lines * 30, vocab_size=200)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    return AutoTokenizer.from_pretrained(str(folder)), sp, folder


@pytest.fixture(scope="module")
def plain():
    """A plain tokenizer trained on ShapeWorld-like sem-seg dialogues."""
    rng = random.Random(0)
    corpus = []
    for _ in range(40):
        names = rng.sample(CLASSES, 4)
        question = f"<image>\n<semantic>Segment this image.<cat_start> {', '.join(names)} <cat_end>"
        answer = "".join(f"{n}<{rng.choice(['ins', 'no_ins'])}>" for n in names)
        corpus.append(render([(question, answer)], eos="</s>"))
    return build_plain_tokenizer(corpus, vocab_size=300)


def pieces(tokenizer, ids):
    return [IMAGE if i == IMAGE_TOKEN_ID else tokenizer.convert_ids_to_tokens(i) for i in ids]


def sp_pieces(sp, text):
    return sp.encode(text, out_type=str)


def test_released_layout_ids_come_from_the_tokenizer(released):
    tok, sp, _ = released
    ids = token_ids(tok)
    vocab = sp.get_piece_size()
    assert (ids.cat_start, ids.ins, ids.im_end) == (vocab, vocab + 3, vocab + 6)
    assert encode(tok, "</s><ins>", "llama431", add_bos=False) == [2, ids.ins]


def test_answer_items_get_the_dummy_prefix(released):
    tok, sp, _ = released
    assert sp_pieces(sp, "wall") == ["▁wall"] and sp_pieces(sp, "bed") == ["▁bed"]  # chosen training text
    ids = encode(tok, "wall<ins>bed<no_ins>", "llama431")
    assert pieces(tok, ids) == ["<s>", "▁wall", "<ins>", "▁bed", "<no_ins>"]


def test_whitespace_around_added_tokens_is_stripped(released):
    tok, sp, _ = released
    spaced = encode(tok, "<cat_start> wall, bed <cat_end>", "llama431")
    assert spaced == encode(tok, "<cat_start>wall, bed<cat_end>", "llama431")
    assert pieces(tok, spaced) == ["<s>", "<cat_start>", *sp_pieces(sp, "wall, bed"), "<cat_end>"]
    assert pieces(tok, encode(tok, "<im_end>\n<semantic>", "llama431")) == ["<s>", "<im_end>", "<semantic>"]
    assert encode(tok, "bed <ins> \n </s>", "llama431") == encode(tok, "bed<ins></s>", "llama431")


def test_eos_and_image_keep_their_whitespace(released):
    tok, _, _ = released
    # `</s>` and `<image>` never strip; a chunk that starts with a space gets `▁` twice, as in sentencepiece.
    assert pieces(tok, encode(tok, "wall</s> bed", "llama431")) == ["<s>", "▁wall", "</s>", "▁", "▁bed"]
    assert pieces(tok, encode(tok, "<image> bed", "llama431")) == ["<s>", IMAGE, "▁", "▁bed"]


def test_image_sentinel_and_a_single_bos(released):
    tok, _, _ = released
    ids = encode(tok, "USER: <im_start><image><im_end>\n<semantic>bed", "llama431")
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert pieces(tok, ids)[-5:] == ["<im_start>", IMAGE, "<im_end>", "<semantic>", "▁bed"]
    assert pieces(tok, encode(tok, "<image>wall", "llama431")) == ["<s>", IMAGE, "▁wall"]
    assert encode(tok, "<image>", "llama431", add_bos=False) == [IMAGE_TOKEN_ID]


def test_released_sem_seg_prompt_by_hand(released):
    """The whole released training string (spec §2.4, §10), expected pieces derived by hand from the 4.31 rules."""
    tok, sp, _ = released
    text = render([(SEM_QUESTION, SEM_ANSWER)], eos=tok.eos_token)
    expected = [
        "<s>",
        *sp_pieces(sp, SYSTEM + " USER:"),
        *["<im_start>", IMAGE, "<im_end>", "<semantic>"],
        *sp_pieces(sp, "Segment this image."),
        "<cat_start>",
        *sp_pieces(sp, "wall, bed"),
        "<cat_end>",
        *sp_pieces(sp, "ASSISTANT: wall"),
        *["<ins>", "▁bed", "<no_ins>", "</s>"],
    ]
    assert pieces(tok, encode(tok, text, "llama431")) == expected


def test_text_chunks_match_sentencepiece(released):
    """4.31's slow tokenizer ran sentencepiece on each chunk; leading, trailing and repeated spaces included."""
    tok, sp, _ = released
    chars = [sp.id_to_piece(i) for i in range(3, sp.get_piece_size()) if len(sp.id_to_piece(i)) == 1]
    chars = [c for c in chars if c != "▁"] + [" "] * 8
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 20)))
        assert encode(tok, text, "llama431", add_bos=False) == sp.encode(text), repr(text)


def test_characters_outside_the_vocabulary_are_an_error(released):
    tok, _, _ = released  # the real LLaMA vocabulary has byte fallback; this tiny one does not
    with pytest.raises(ValueError, match="cannot encode the characters \\['é'\\]"):
        encode(tok, "wall<ins>é", "llama431")


def test_direct_transformers_5_calls_differ(released, tmp_path):
    """Why this module exists: transformers 5.23's LlamaTokenizer on the whole string departs from 4.31."""
    tok, _, folder = released

    def direct(text, t=tok):
        return t.convert_ids_to_tokens(t(text).input_ids)

    assert direct("<cat_start> wall, bed <cat_end>")[-2] == "▁"  # space before <cat_end> kept
    assert direct("<im_end>\n<semantic>") != ["<s>", "<im_end>", "<semantic>"]  # newline kept
    assert IMAGE_TOKEN_ID not in tok("<im_start><image><im_end>").input_ids  # `<image>` is plain text
    assert direct("wall</s> bed")[-2:] == ["</s>", "▁bed"]  # sentencepiece gives "▁", "▁bed"
    # Without "legacy": true (5.23 then defaults to legacy=False) a chunk after an added token loses its `▁`.
    no_legacy = tmp_path / "no_legacy"
    shutil.copytree(folder, no_legacy)
    write_released_layout(no_legacy, legacy=None)
    tok2 = AutoTokenizer.from_pretrained(str(no_legacy))
    assert "▁bed" not in direct(SEM_ANSWER, tok2)
    text = render([(SEM_QUESTION, SEM_ANSWER)], eos="</s>")
    assert encode(tok2, text, "llama431") == encode(tok, text, "llama431")  # ours ignores the flag


def test_unknown_style_and_missing_tokens_are_errors(released):
    tok, _, _ = released
    with pytest.raises(ValueError, match="known: \\['llama431', 'plain'\\]"):
        encode(tok, "wall", "llama2")  # type: ignore[arg-type]
    bare = _crossing_tokenizer(register=False)
    with pytest.raises(ValueError, match="register_tokens"):
        encode(bare, "wall<ins>", "plain")


def test_plain_tokenizer_is_deterministic(tmp_path):
    corpus = ["wall<ins>bed<no_ins>", "Segment this image.<cat_start> wall, bed <cat_end>"] * 5
    for name in ("a", "b"):
        build_plain_tokenizer(corpus, vocab_size=150).save_pretrained(str(tmp_path / name))
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_plain_tokenizer_layout(plain):
    assert [plain.convert_tokens_to_ids(t) for t in PLAIN_SPECIALS] == [0, 1, 2, 3]
    assert (plain.unk_token_id, plain.bos_token_id, plain.eos_token_id, plain.pad_token_id) == (0, 1, 2, 3)
    for name in CLASSES:
        assert pieces(plain, encode(plain, name, "plain", add_bos=False)) == [f"▁{name}"]
    first_added = plain.convert_tokens_to_ids(RELEASED_ORDER[0])
    learned = [t for t, i in plain.get_vocab().items() if 3 < i < first_added]
    assert not [t for t in learned if find_special(t) or "ins>" in t or "cat_" in t]  # specials never trained
    assert plain(SEM_ANSWER).input_ids == encode(plain, SEM_ANSWER, "plain")


def test_plain_ascii_round_trips(plain):
    rng = random.Random(1)
    forbidden = (*ALL_TOKENS, *PLAIN_SPECIALS)
    for _ in range(300):
        text = "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 24))).lstrip(" ")
        if any(s in text for s in forbidden):
            continue
        ids = encode(plain, text, "plain", add_bos=False)
        assert plain.unk_token_id not in ids
        assert plain.decode(ids) == text, repr(text)
    # A chunk's leading space folds into the dummy prefix (Metaspace), the one difference from "llama431".
    assert encode(plain, " wall", "plain", add_bos=False) == encode(plain, "wall", "plain", add_bos=False)
    assert plain.unk_token_id in encode(plain, "café", "plain")
    # the corpus lists names before commas; a name and its comma still never make one piece
    assert pieces(plain, encode(plain, "wall, bed", "plain", add_bos=False)) == ["▁wall", ",", "▁bed"]


@pytest.fixture(scope="module")
def phrased():
    """A plain tokenizer that keeps two-word class names whole."""
    rng = random.Random(2)
    names = ["red circle", "blue square", "red square", "sky"]
    corpus = []
    for _ in range(40):
        listed = rng.sample(names, 3)
        corpus.append(f"Segment {', '.join(listed)}.<cat_start> {', '.join(listed)} <cat_end>")
        corpus.append("".join(f"{n}<{rng.choice(['ins', 'no_ins'])}>" for n in listed))
    corpus.append("the red ball left of the blue one")
    return build_plain_tokenizer(corpus, vocab_size=300, whole_phrases=["red circle", "blue square"])


def test_whole_phrases_become_one_piece(phrased, tmp_path):
    def split(text):
        return pieces(phrased, encode(phrased, text, "plain", add_bos=False))

    assert split("red circle") == ["▁red▁circle"]
    assert split("Segment red circle, sky.") == ["▁Segment", "▁red▁circle", ",", "▁sky", "."]
    assert split("sky, red circle")[:2] == ["▁sky", ","]  # the corpus has "sky," often, yet it never becomes a piece
    assert split("blue square<ins>red circle<no_ins>")[0] == "▁blue▁square"
    assert split("red square") == ["▁red", "▁square"]  # not listed: spelled by its words
    assert split("red circles")[0] == "▁red"  # a phrase only ends at a non-letter
    for text in ["red circle", "the red circle, sky", "a  blue square.", "red circles and blue squares"]:
        assert phrased.decode(encode(phrased, text, "plain", add_bos=False)) == text
        assert decode_span(phrased, encode(phrased, text, "plain", add_bos=False)) == text
    phrased.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert encode(loaded, "Segment red circle, sky.", "plain") == encode(phrased, "Segment red circle, sky.", "plain")


def test_whole_phrases_must_be_multi_word_ascii():
    for bad in (["sky"], ["red  circle"], ["café noir"]):
        with pytest.raises(ValueError, match="whole phrases"):
            build_plain_tokenizer(["red circle"], vocab_size=150, whole_phrases=bad)


def test_plain_tokenizer_save_and_load(plain, tmp_path):
    plain.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    text = render([(SEM_QUESTION, SEM_ANSWER)], eos="</s>")
    assert encode(loaded, text, "plain") == encode(plain, text, "plain")
    assert token_ids(loaded) == token_ids(plain)


def test_decode_span(released, plain):
    tok, _, _ = released
    assert decode_span(tok, encode(tok, " wall", "llama431", add_bos=False)) == "wall"
    assert decode_span(plain, encode(plain, "blue square", "plain", add_bos=False)) == "blue square"
    with pytest.raises(ValueError, match="special ids"):
        decode_span(tok, [IMAGE_TOKEN_ID])
    with pytest.raises(ValueError, match="special ids"):
        decode_span(plain, encode(plain, "wall<ins>", "plain", add_bos=False))


def detokenize(tokenizer, ids):
    """Special ids back to their strings, text runs through decode_span: the inverse of `encode` on answers."""
    specials = {tokenizer.convert_tokens_to_ids(t): t for t in (*RELEASED_ORDER, tokenizer.eos_token)}
    out, run = [], []
    for i in [*ids, None]:
        if i is None or i in specials:
            out.append(decode_span(tokenizer, run) if run else "")
            run = []
            out.append(specials.get(i, ""))
        else:
            run.append(i)
    return "".join(out)


def supervised_spans(labels):
    spans, current = [], []
    for label in [*labels, IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            spans.append(current)
            current = []
    return spans


@pytest.mark.parametrize("style", ["llama431", "plain"])
def test_encode_dialogue_masks_all_but_answers(style, released, plain):
    tok = released[0] if style == "llama431" else plain
    rounds = [(SEM_QUESTION, SEM_ANSWER), ("Which is present?", "wall")]
    ids, labels = encode_dialogue(tok, rounds, style)
    assert ids == encode(tok, render(rounds, eos=tok.eos_token), style) and len(labels) == len(ids)
    assert labels[0] == IGNORE_INDEX and labels[-1] == tok.eos_token_id
    assert all(label in (IGNORE_INDEX, i) for label, i in zip(labels, ids, strict=True))
    spans = supervised_spans(labels)
    assert [detokenize(tok, s) for s in spans] == [SEM_ANSWER + tok.eos_token, "wall" + tok.eos_token]
    assert spans[0] == [*encode(tok, SEM_ANSWER, style, add_bos=False), tok.eos_token_id]


@pytest.mark.parametrize("style", ["llama431", "plain"])
def test_encode_dialogue_open_round(style, released, plain):
    tok = released[0] if style == "llama431" else plain
    ids, labels = encode_dialogue(tok, [(SEM_QUESTION, None)], style)
    assert ids == encode(tok, render([(SEM_QUESTION, None)], eos=tok.eos_token), style)
    assert set(labels) == {IGNORE_INDEX}
    ids2, labels2 = encode_dialogue(tok, [(SEM_QUESTION, SEM_ANSWER), ("Which is present?", None)], style)
    assert [detokenize(tok, s) for s in supervised_spans(labels2)] == [SEM_ANSWER + tok.eos_token]
    closed = encode(tok, render([(SEM_QUESTION, SEM_ANSWER)], eos=tok.eos_token), style)
    assert ids2[: len(closed)] == closed and set(labels2[len(closed) :]) == {IGNORE_INDEX}


def _crossing_tokenizer(register: bool = True) -> PreTrainedTokenizerFast:
    """A BPE whose one merge joins ":" with the next word's `▁`, so "ASSISTANT:" is no prefix of "ASSISTANT: wall"."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, ":": 3, "▁": 4, ":▁": 5}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[(":", "▁")], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    if register:
        register_tokens(tokenizer)
    return tokenizer


def test_encode_dialogue_rejects_a_tokenizer_that_merges_across_the_boundary():
    with pytest.raises(ValueError, match="label mask cannot be placed"):
        encode_dialogue(_crossing_tokenizer(), [("bed", "wall")], "plain")


def test_whole_phrase_pattern_is_the_same_in_every_process():
    # why: equal-length names used to keep the order of a set of strings, which Python's hash seed reshuffles per run
    code = (
        "from lasagna.tokenization import _whole_phrase_pretokenizer as p;"
        "print(p(['red circle', 'red square', 'blue circle', 'pink ring', 'cyan star']).__getstate__())"
    )
    states = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, check=True
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(states) == 1
