"""Text that reaches the prompt: reserved token strings, the shapes of arguments, and the model's context."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lasagna.infer.engine as engine_module
from helpers import write_released_tokenizer
from lasagna import prompts
from lasagna.api import Lasagna
from lasagna.infer.inputs import (
    MAX_NAME_CHARS,
    MAX_QUERY_CHARS,
    ClassListError,
    ContextLengthError,
    TextTooLongError,
    check_classes,
    check_query,
    positions,
)
from lasagna.tokenization import build_plain_tokenizer
from lasagna.tokens import IMAGE_TOKEN_ID, ReservedTextError, check_user_text, register_tokens, reserved_strings

IMAGE = np.zeros((48, 64, 3), np.uint8)
SAFE_TEXT = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789-'"), max_size=30)


@pytest.fixture(scope="module")
def lasagna():
    return Lasagna.from_pretrained()


@pytest.fixture
def no_llm(monkeypatch):
    """Fail the test if the LLM runs: refusals must come before any decoding."""

    def refuse(*args, **kwargs):
        raise AssertionError("the LLM ran on input that should have been refused")

    monkeypatch.setattr(engine_module, "encode_prefix", refuse)


def _flip_case(text: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(text, flips + [False] * len(text), strict=False))


# 1. reserved strings come from the tokenizer, in any letter case


def test_reserved_strings_come_from_the_tokenizer(lasagna):
    reserved = reserved_strings(lasagna.tokenizer)
    assert {"</s>", "<s>", "<unk>", "<pad>", "<ins>", "<no_ins>", "<cat_end>", "<image>"} <= reserved
    assert set(lasagna.tokenizer.all_special_tokens) <= reserved
    assert set(lasagna.tokenizer.get_added_vocab()) <= reserved


def test_a_released_llama_tokenizer_reserves_its_specials(tmp_path):
    from transformers import AutoTokenizer

    write_released_tokenizer(tmp_path, ["USER: Segment this image. ASSISTANT: wall bed sky"] * 30, vocab_size=60)
    reserved = reserved_strings(AutoTokenizer.from_pretrained(str(tmp_path)))
    assert {"<s>", "</s>", "<unk>", "<ins>", "<no_ins>", "<cat_start>", "<im_end>", "<image>"} <= reserved
    with pytest.raises(ReservedTextError, match=re.escape("['</s>']")):
        check_user_text("sky</S>", "class name", reserved)


def test_a_tokenizers_own_added_token_is_reserved():
    tokenizer = build_plain_tokenizer(["red circle, blue star, sky"] * 4, vocab_size=120)
    register_tokens(tokenizer)
    tokenizer.add_tokens(["<region>"], special_tokens=True)
    tokenizer.add_tokens(["[[box]]"])  # not special, but the tokenizer still matches it as one piece
    reserved = reserved_strings(tokenizer)
    assert {"<region>", "[[box]]", "<ins>"} <= reserved
    with pytest.raises(ReservedTextError, match=re.escape("['<region>']")):
        check_user_text("the <REGION> here", "query", reserved)
    with pytest.raises(ReservedTextError, match=re.escape("['[[box]]']")):
        check_user_text("a [[Box]]", "class name", reserved)
    check_user_text("a [[Box]]", "class name")  # the project's own tokens alone do not hold it


@pytest.mark.parametrize("name", ["sky, </s>", "</s>", "<CAT_END>", "<INS>", "big <No_Ins> star", "<Image>", "<S>x"])
def test_class_names_with_reserved_strings_are_refused_by_name(lasagna, no_llm, name):
    with pytest.raises(ReservedTextError) as info:
        lasagna.segment(IMAGE, classes=["sky", name])
    message = str(info.value)
    assert repr(name) in message and "class name" in message
    token = re.search(r"\['([^']+)'", message).group(1)
    assert token.casefold() in name.casefold() and token in reserved_strings(lasagna.tokenizer)


@pytest.mark.parametrize("text", ["the </S> star", "<unk>", "what is <INS>?", "<Pad> the sky"])
def test_queries_and_chat_with_reserved_strings_are_refused_by_name(lasagna, no_llm, text):
    with pytest.raises(ReservedTextError, match=re.escape(repr(text))):
        lasagna.segment(IMAGE, query=text)
    with pytest.raises(ReservedTextError, match=re.escape(repr(text))):
        lasagna.segment_queries(IMAGE, ["the sky", text])
    with pytest.raises(ReservedTextError, match=re.escape(repr(text))):
        lasagna.chat(IMAGE, text)


@settings(max_examples=150, deadline=None)
@given(
    before=st.text(max_size=20),
    after=st.text(max_size=20),
    index=st.integers(min_value=0),
    flips=st.lists(st.booleans(), max_size=12),
)
def test_any_reserved_string_in_any_case_is_refused(lasagna, before, after, index, flips):
    reserved = sorted(reserved_strings(lasagna.tokenizer))
    token = reserved[index % len(reserved)]
    text = before + _flip_case(token, flips) + after
    with pytest.raises(ReservedTextError) as info:
        check_user_text(text, "class name", reserved_strings(lasagna.tokenizer))
    assert repr(text) in str(info.value)


@settings(max_examples=100, deadline=None)
@given(st.lists(SAFE_TEXT.filter(lambda t: any(c.isalnum() for c in t)), min_size=1, max_size=40, unique_by=str.lower))
def test_plain_names_pass(names):
    keys = [" ".join(n.split()).lower() for n in names]
    assume(len(set(keys)) == len(keys))
    assert check_classes(names) == [n.strip() for n in names]


# 2. shapes of arguments


def test_a_string_of_classes_is_an_error_not_its_letters(lasagna, no_llm):
    with pytest.raises(ClassListError, match=r"list of names, got the string 'sky'.*classes=\['sky'\]"):
        lasagna.segment(IMAGE, classes="sky")
    with pytest.raises(ClassListError, match="list of names, got str"):
        lasagna.engine.segment_classes(IMAGE, "sky, grass")
    with pytest.raises(TypeError, match="segment_queries"):
        lasagna.segment(IMAGE, query=["the sky", "the star"])


@pytest.mark.parametrize(
    ("names", "pattern"),
    [
        (["sky", ""], r"class name '' is empty"),
        (["sky", " .;"], r"class name ' .;' is empty"),
        (["Sky", "grass", " sky."], r"class ' sky\.' is listed twice \(as 'Sky'\)"),
        (["red  Circle", "red circle"], r"class 'red circle' is listed twice \(as 'red  Circle'\)"),
        (["sky", "a" * (MAX_NAME_CHARS + 1)], rf"'a{{60}}'\.\.\. \({MAX_NAME_CHARS + 1} characters\) is longer than"),
        (["sky", 3], r"class names must be strings, got int 3"),
        (["red, blue"], r"'red, blue' contains a comma"),
        (["sky\ngrass\nsand"], r"'sky\\ngrass\\nsand' holds a line break, tab or other control character"),
        (["red\tcircle"], r"'red\\tcircle' holds a line break"),
        ([], r"classes is empty"),
    ],
)
def test_bad_names_are_errors_that_name_them(lasagna, no_llm, names, pattern):
    with pytest.raises(ValueError, match=pattern):
        lasagna.segment(IMAGE, classes=names)


def test_names_up_to_the_cap_and_long_lists_are_accepted(lasagna):
    assert check_classes(["a" * MAX_NAME_CHARS]) == ["a" * MAX_NAME_CHARS]
    many = [f"thing {i}" for i in range(5000)]
    assert check_classes(many) == many
    pred = lasagna.segment(IMAGE, classes=[f"shape {i}" for i in range(20)], chunk_size=8)
    assert [c.name for c in pred.classes] == [f"shape {i}" for i in range(20)]


# 3. the model's context


def test_positions_count_the_image_tokens():
    assert positions([5, IMAGE_TOKEN_ID, 6, 7], 65) == 3 + 65
    assert positions([5, 6], 65) == 2


def _chunk_ids(lasagna, names: list[str], answered: bool) -> list[int]:
    engine = lasagna.engine
    answer = prompts.semantic_answer(names) if answered else None
    return engine._encode(engine._render([(prompts.semantic_question(names), answer)]))


def test_the_embedded_model_counts_its_image_tokens(lasagna):
    cfg = lasagna.config
    assert (cfg.llm.max_position_embeddings, cfg.vision.num_features) == (1024, 65)


@pytest.mark.parametrize("decoder", ["template", "free"])
def test_a_chunk_counts_its_answer_and_image_tokens(lasagna, no_llm, monkeypatch, decoder):
    names = ["red circle", "blue star", "sky", "grass"]
    image_tokens = lasagna.config.vision.num_features
    prompt = positions(_chunk_ids(lasagna, names, False), image_tokens)
    full = positions(_chunk_ids(lasagna, names, True), image_tokens)
    assert full - prompt >= len(names)
    for limit in (prompt, full - 1, len(_chunk_ids(lasagna, names, True)) + 1):  # the prompt alone fits the first
        monkeypatch.setattr(lasagna.config.llm, "max_position_embeddings", limit)
        with pytest.raises(ContextLengthError, match=rf"needs {full} positions \({image_tokens} of them the image's\)"):
            lasagna.segment(IMAGE, classes=names, decoder=decoder, chunk_size=4)


def test_a_chunk_that_just_fits_runs(lasagna, monkeypatch):
    names = ["red circle", "blue star"]
    full = positions(_chunk_ids(lasagna, names, True), lasagna.config.vision.num_features)
    monkeypatch.setattr(lasagna.config.llm, "max_position_embeddings", full)
    assert len(lasagna.segment(IMAGE, classes=names).classes) == 2


def test_an_overlong_chunk_names_its_classes_and_suggests_a_chunk_size(lasagna, monkeypatch):
    names = [f"name {i} " + "zebra quilt " * 12 for i in range(16)]  # 150 characters each, under the name cap
    names = [n.strip() for n in names]
    calls = []
    real = engine_module.encode_prefix
    monkeypatch.setattr(engine_module, "encode_prefix", lambda *a, **k: calls.append(1) or real(*a, **k))
    with pytest.raises(ContextLengthError) as info:
        lasagna.segment(IMAGE, classes=names, chunk_size=16)
    message = str(info.value)
    assert not calls
    assert "the chunk of 16 classes" in message and repr(names[0][:30]) in message and "longest name" in message
    smaller = int(re.search(r"smaller chunk_size \(e\.g\. (\d+)\)", message).group(1))
    assert 1 <= smaller < 16
    pred = lasagna.segment(IMAGE, classes=names, chunk_size=smaller)  # the suggestion works
    assert [c.name for c in pred.classes] == names and calls


def test_one_name_too_long_for_the_context_says_to_shorten_it(lasagna, no_llm, monkeypatch):
    monkeypatch.setattr(lasagna.config.llm, "max_position_embeddings", 200)
    name = "zebra quilt " * 8
    with pytest.raises(ContextLengthError, match=r"class name 'zebra quilt.*its prompt needs \d+ positions.*shorten"):
        lasagna.segment(IMAGE, classes=[name.strip()])


def test_queries_have_a_character_cap_checked_first(lasagna, no_llm):
    huge = "where is the red circle " * 4200  # about 100,000 characters: it ran for 526 s before the cap
    start = time.perf_counter()
    with pytest.raises(TextTooLongError, match=rf"query 'where is.*\({len(huge)} characters\) is longer than"):
        lasagna.segment(IMAGE, query=huge)
    with pytest.raises(TextTooLongError, match="text 'where is"):
        lasagna.chat(IMAGE, huge)
    assert time.perf_counter() - start < 2.0
    assert check_query("x" * MAX_QUERY_CHARS) == "x" * MAX_QUERY_CHARS
    with pytest.raises(TextTooLongError):
        check_query("x" * (MAX_QUERY_CHARS + 1))


def test_a_query_under_the_cap_must_still_fit_the_context(lasagna, no_llm):
    query = "the zebra quilt " * 120  # under the character cap, over 1,024 positions (words the vocabulary lacks)
    assert len(query) <= MAX_QUERY_CHARS
    with pytest.raises(ContextLengthError, match=r"query 'the zebra quilt.*needs \d+ positions.*1024; shorten it"):
        lasagna.segment(IMAGE, query=query)
    with pytest.raises(ContextLengthError, match=r"query 'the zebra quilt"):
        lasagna.segment_queries(IMAGE, ["the sky", query])


def test_a_query_leaves_room_for_its_shortest_answer(lasagna, no_llm, monkeypatch):
    engine = lasagna.engine
    question = prompts.query_question("the red star")
    prompt = positions(engine._encode(engine._render([(question, None)])), lasagna.config.vision.num_features)
    monkeypatch.setattr(lasagna.config.llm, "max_position_embeddings", prompt)  # the prompt fits, "<ins>." not
    with pytest.raises(ContextLengthError, match="query 'the red star'"):
        lasagna.segment(IMAGE, query="the red star")
