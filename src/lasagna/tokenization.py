"""Prompt text -> token ids, with the released LaSagnA-7B's transformers-4.31 behaviour (spec §2.3, §1.4, §2.5).

The released model was trained with the 4.31 *slow* `LlamaTokenizer` (`legacy=True`) behind LLaVA's
`tokenizer_image_token`. Its rules, which `encode` reproduces on any transformers version:

1. The prompt is split on `<image>`; each part is encoded on its own and the sentinel `IMAGE_TOKEN_ID` (-200) goes
   between the parts. Whitespace next to `<image>` is kept (e.g. `"USER: <image>"` ends in a `▁` piece).
2. Inside a part, every added token and every base special token (`<s>`, `</s>`, `<unk>`, the pad token) is cut out
   as one id. Whitespace on both sides of an *added* token (`<cat_start>`, `<ins>`, `<im_end>`, ...) is removed, so
   `"<cat_start> wall <cat_end>"` encodes like `"<cat_start>wall<cat_end>"` and the `"\\n"` after `<im_end>`
   vanishes. Whitespace next to a base special token (`</s>`) is kept.
3. Every remaining text chunk is encoded on its own with sentencepiece semantics: the dummy prefix `▁` is always
   prepended (even when the chunk already starts with a space), then spaces become `▁`. So `wall<ins>bed<no_ins>`
   gives `▁wall <ins> ▁bed <no_ins>`.
4. One BOS id at the very start (LLaVA tokenizes every part with BOS and drops it from all but the first).

Calling a transformers 5.23 LLaMA tokenizer directly on the whole string differs in four ways (hence this module):
whitespace next to added tokens is encoded (`"bed <cat_end>"` gets an extra `▁` piece, the `"\\n"` after `<im_end>`
survives); `<image>` is ordinary text instead of -200; a chunk that starts with a space loses one `▁` (its Metaspace
pre-tokenizer only prepends `▁` when none is there, sentencepiece always does: in `"</s> USER"` one `▁` precedes
`USER` instead of two); and with `legacy=False` (5.23's default when tokenizer_config.json does not say) a chunk
after an added token gets no `▁` at all (`<ins>bed` gives `be d` instead of `▁bed`).

Styles. Both styles share one code path (rules 1, 2 and 4 are the same: the tiny ShapeWorld models then see the same
token layout as the released one). They differ in exactly one step, how a text chunk becomes ids (rule 3):

- `"llama431"`: sentencepiece semantics forced by hand: `"▁" + chunk.replace(" ", "▁")` is run through the
  tokenizer's backend model (BPE) alone, bypassing its normalizer and pre-tokenizer, which vary between transformers
  versions and `legacy` settings. The pieces must cover the chunk (LLaMA has byte fallback); otherwise it is an
  error, where 4.31 would have emitted `<unk>`.
- `"plain"`: the tokenizer's own pipeline, `tokenizer(chunks, add_special_tokens=False)`, so any tokenizers-backed
  tokenizer works and a direct call on one chunk gives the same ids. For `build_plain_tokenizer`'s Metaspace
  tokenizer this equals rule 3 except for a chunk that starts with a space, which gets one `▁`, not two.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Literal

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers.tokenization_utils_tokenizers import PreTrainedTokenizerFast

from .prompts import render
from .tokens import ALL_TOKENS, IGNORE_INDEX, IMAGE, IMAGE_TOKEN_ID, find_special, register_tokens

Style = Literal["llama431", "plain"]

SPIECE = "▁"
UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
PLAIN_SPECIALS = (UNK, BOS, EOS, PAD)  # ids 0..3 of every plain tokenizer, like LLaMA's 0..2
# Spaces are `▁` after the Metaspace pre-tokenizer, so the alphabet holds `▁` in their place.
PLAIN_ALPHABET = sorted(set(string.printable.replace(" ", SPIECE)))

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_ADDED = tuple(t for t in ALL_TOKENS if t != IMAGE)  # the LaSagnA tokens that are vocabulary entries


def _base_specials(tokenizer) -> set[str]:
    """bos/eos/unk/pad strings: 4.31 made them AddedTokens with lstrip=rstrip=False, so they never strip."""
    named = (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.pad_token)
    return {t for t in named if t} - set(ALL_TOKENS)


def _segments(text: str, specials: Collection[str], unstripped: Collection[str]) -> list[tuple[str, bool]]:
    """Rules 1-2: `text` as (string, is_special) pairs; `<image>` counts as special; empty chunks are dropped."""
    alternatives = "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True))
    pattern = re.compile(f"({alternatives or '(?!)'})")  # `(?!)` never matches: no specials, no split
    out: list[tuple[str, bool]] = []
    for n, part in enumerate(text.split(IMAGE)):
        if n:
            out.append((IMAGE, True))
        pieces = pattern.split(part)  # even indices: text chunks, odd indices: special strings
        for i, piece in enumerate(pieces):
            if i % 2:
                out.append((piece, True))
                continue
            if i > 0 and pieces[i - 1] not in unstripped:
                piece = piece.lstrip()
            if i + 1 < len(pieces) and pieces[i + 1] not in unstripped:
                piece = piece.rstrip()
            if piece:
                out.append((piece, False))
    return out


def _special_ids(tokenizer, text: str) -> dict[str, int]:
    """Every string cut out of text (added tokens plus base specials) with its id; a LaSagnA token in `text` that the
    tokenizer lacks is an error, because it would otherwise be encoded as plain characters."""
    specials = set(tokenizer.get_added_vocab()) | _base_specials(tokenizer)
    missing = sorted({t for t in find_special(text) if t != IMAGE and t not in specials})
    if missing:
        raise ValueError(f"text uses {missing}, which the tokenizer lacks; call lasagna.tokens.register_tokens")
    return {t: tokenizer.convert_tokens_to_ids(t) for t in specials}


def _covers(text: str, pieces: Sequence[str]) -> bool:
    """True when `pieces` (byte-fallback pieces like `<0x0A>` included) spell `text` exactly."""
    data = b"".join(bytes([int(m[1], 16)]) if (m := _BYTE_PIECE.fullmatch(p)) else p.encode() for p in pieces)
    return data == text.encode()


def _encode_chunks_sentencepiece(tokenizer, chunks: list[str]) -> list[list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"style 'llama431' needs a tokenizers-backed tokenizer, got {type(tokenizer).__name__}")
    out = []
    for chunk in chunks:
        text = SPIECE + chunk.replace(" ", SPIECE)
        pieces = backend.model.tokenize(text)
        if not _covers(text, [p.value for p in pieces]):
            bad = [
                c for c in sorted(set(chunk) - {" "}) if not _covers(c, [p.value for p in backend.model.tokenize(c)])
            ]
            raise ValueError(
                f"the tokenizer cannot encode the characters {bad} of {chunk[:60]!r}: they are outside its vocabulary "
                "and it has no byte fallback"
            )
        out.append([p.id for p in pieces])
    return out


def _encode_chunks_pipeline(tokenizer, chunks: list[str]) -> list[list[int]]:
    return tokenizer(chunks, add_special_tokens=False)["input_ids"] if chunks else []


_CHUNK_ENCODERS: dict[str, Callable[[object, list[str]], list[list[int]]]] = {
    "llama431": _encode_chunks_sentencepiece,
    "plain": _encode_chunks_pipeline,
}


def encode(tokenizer, text: str, style: Style, add_bos: bool = True) -> list[int]:
    """Token ids of `text` under the rules in the module docstring; `<image>` -> IMAGE_TOKEN_ID, `</s>` -> eos id.

    Special ids come from `tokenizer.convert_tokens_to_ids`; BOS (when `add_bos`) appears once, at index 0.
    """
    if style not in _CHUNK_ENCODERS:
        raise ValueError(f"unknown tokenization style {style!r}; known: {sorted(_CHUNK_ENCODERS)}")
    if add_bos and tokenizer.bos_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no bos token; pass add_bos=False")
    ids_of = _special_ids(tokenizer, text)
    segments = _segments(text, ids_of, _base_specials(tokenizer))
    encoded = iter(_CHUNK_ENCODERS[style](tokenizer, [s for s, special in segments if not special]))
    ids = [tokenizer.bos_token_id] if add_bos else []
    for s, special in segments:
        if not special:
            ids.extend(next(encoded))
        else:
            ids.append(IMAGE_TOKEN_ID if s == IMAGE else ids_of[s])
    return ids


def decode_span(tokenizer, ids: Sequence[int]) -> str:
    """The text of one span of plain-text ids (e.g. the class name before an `<ins>`), surrounding whitespace and the
    leading `▁` removed. Encoding strips whitespace next to added tokens, so none of it carries information.

    A span holds no special id (the image sentinel, LaSagnA tokens, bos/eos); `<unk>` is allowed.
    """
    ids = list(ids)
    specials = _special_ids(tokenizer, "")
    forbidden = {i for t, i in specials.items() if t != tokenizer.unk_token}
    bad = [i for i in ids if i < 0 or i in forbidden]
    if bad:
        raise ValueError(f"decode_span expects the ids of one text span, got special ids {bad} in {ids}")
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False).strip()


def _prefix_length(
    tokenizer, rounds: list[tuple[str, str | None]], full: list[int], style: Style, wrap_image: bool
) -> int:
    """Length of the encoded dialogue prefix `rounds`, checked to be a prefix of the full encoding `full`."""
    text = render(rounds, eos=tokenizer.eos_token, wrap_image=wrap_image)
    ids = encode(tokenizer, text, style)
    if full[: len(ids)] != ids:
        raise ValueError(
            f"{type(tokenizer).__name__} encodes the dialogue prefix ending in {text[-40:]!r} differently inside the "
            "whole dialogue (a token spans the boundary), so the label mask cannot be placed; use a tokenizer whose "
            "pieces do not cross word boundaries"
        )
    return len(ids)


def encode_dialogue(
    tokenizer, rounds: list[tuple[str, str | None]], style: Style, wrap_image: bool = True
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a rendered LLaVA-v1 dialogue (prompts.render, eos = tokenizer.eos_token).

    labels equal input_ids on each answer's tokens and its closing eos, IGNORE_INDEX elsewhere (BOS, system prompt,
    questions, "ASSISTANT:"), as LLaVA-v1 masking (spec §2.5). Boundaries come from encoding each prefix that ends in
    "ASSISTANT:" or in an answer's eos and checking that the full encoding starts with it. An open last round
    (answer None) ends input_ids after "ASSISTANT:" and supervises nothing.
    """
    input_ids = encode(tokenizer, render(rounds, eos=tokenizer.eos_token, wrap_image=wrap_image), style)
    labels = [IGNORE_INDEX] * len(input_ids)
    for i, (question, answer) in enumerate(rounds):
        if answer is None:
            break
        start = _prefix_length(tokenizer, [*rounds[:i], (question, None)], input_ids, style, wrap_image)
        end = _prefix_length(tokenizer, rounds[: i + 1], input_ids, style, wrap_image)
        labels[start:end] = input_ids[start:end]
    return input_ids, labels


def _training_chunks(corpus: Iterable[str]) -> Iterator[str]:
    """The text chunks `encode` will see, so the special strings never become BPE pieces."""
    specials = set(_ADDED) | set(PLAIN_SPECIALS)
    for line in corpus:
        yield from (s for s, special in _segments(line, specials, PLAIN_SPECIALS) if not special)


def _whole_phrase_pretokenizer(phrases: Collection[str]):
    """Pre-tokenizer that keeps each multi-word phrase ("red circle") in one pre-token, so BPE can merge it whole.

    Pre-tokens are runs of ASCII letters and digits with their leading space, any other single character (a comma,
    or a letter outside A-Z such as "é"), or a listed phrase followed by a non-letter; spaces then become `▁` inside
    each pre-token and the chunk's first one gets the dummy prefix, as with the word-level Metaspace.
    """
    bad = [p for p in phrases if not re.fullmatch(r"[A-Za-z]+( [A-Za-z]+)+", p)]
    if bad:
        raise ValueError(f"whole phrases must be two or more ASCII words joined by single spaces, got {bad[:3]}")
    # longest first: "red circle" must not stop a longer phrase; ties by name, so the file is the same every run
    longest_first = sorted(set(phrases), key=lambda p: (-len(p), p))
    alternatives = "|".join(re.escape(p) for p in longest_first)
    pattern = Regex(rf" ?(?:{alternatives})(?=[^A-Za-z]|$)| ?[A-Za-z0-9]+| ?[^A-Za-z0-9 ]| ")
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(pattern, behavior="isolated"),
            pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="first", split=False),
        ]
    )


def build_plain_tokenizer(
    corpus: Iterable[str], vocab_size: int = 1024, whole_phrases: Collection[str] = ()
) -> PreTrainedTokenizerFast:
    """A small sentencepiece-like BPE tokenizer trained offline on `corpus` (e.g. ShapeWorld prompts and class names).

    Layout: `<unk>` 0, `<s>` 1, `</s>` 2, `<pad>` 3, then the printable-ASCII alphabet (so ASCII text never hits
    `<unk>`; other characters do), then merges up to `vocab_size`, then the LaSagnA tokens (tokens.register_tokens).
    Metaspace pre-tokenization gives every chunk a leading `▁` and keeps merges inside words, so frequent words
    (class names) become single pieces; punctuation stays apart, so "sky" in "sky, grass" is the same piece as the
    "sky" an answer writes (a name never merges with the comma that follows it in a question's list).
    A direct call adds BOS, like LLaMA. Deterministic: the same corpus gives the same tokenizer.json bytes.

    `whole_phrases` (multi-word class names such as "red circle") are kept in one pre-token, so a phrase frequent in
    the corpus becomes one piece, `▁red▁circle`. A from-scratch LLM then reads a class as one token, as it reads
    "sky"; a phrase outside the list (or too rare to be merged) is still spelled by its words.
    """
    smallest = len(PLAIN_SPECIALS) + len(PLAIN_ALPHABET)
    if vocab_size < smallest:
        raise ValueError(f"vocab_size={vocab_size} is below the {smallest} entries of specials plus alphabet")
    backend = Tokenizer(models.BPE(unk_token=UNK))
    if whole_phrases:
        backend.pre_tokenizer = _whole_phrase_pretokenizer(whole_phrases)
        # Metaspace's decoder drops every `▁` of the first piece ("▁red▁circle" -> "redcircle"); strip one space only.
        backend.decoder = decoders.Sequence([decoders.Replace(SPIECE, " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="always", split=True),
                pre_tokenizers.Punctuation(behavior="isolated"),
            ]
        )
        backend.decoder = decoders.Metaspace(replacement=SPIECE, prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(PLAIN_SPECIALS),
        initial_alphabet=PLAIN_ALPHABET,
        show_progress=False,
    )
    backend.train_from_iterator(_training_chunks(corpus), trainer)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, backend.token_to_id(BOS))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,  # decode must give back the text exactly
    )
    register_tokens(tokenizer)
    return tokenizer
