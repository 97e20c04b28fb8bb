"""The LLaVA v1 conversation template, defined once.

Rendered: SYSTEM + " " + ("USER: " + q + " ASSISTANT: " + a + "</s>") per round; an open turn ends in "ASSISTANT:".
"""

from __future__ import annotations

from .tokens import IM_END, IM_START, IMAGE

SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
USER = "USER"
ASSISTANT = "ASSISTANT"
SEP = " "


def render(rounds: list[tuple[str, str | None]], eos: str, wrap_image: bool = True) -> str:
    """Render (question, answer) rounds; an answer of None leaves the assistant turn open (inference).

    Only the last round may be open. `eos` is the tokenizer's end-of-sequence string, which closes each answer and
    is followed directly by the next "USER:" (llava_v1: sep " " after a question, sep2 = eos after an answer).
    """
    text = SYSTEM + SEP
    for i, (question, answer) in enumerate(rounds):
        if wrap_image:
            question = question.replace(IMAGE, IM_START + IMAGE + IM_END)
        text += f"{USER}: {question}{SEP}{ASSISTANT}:"
        if answer is None:
            if i != len(rounds) - 1:
                raise ValueError("only the last round may have no answer")
            break
        text += f" {answer}{eos}"
    return text
