"""Draw docs/architecture.png: the boxes of a LaSagnA model, the add-ons beside it, and how a request flows.

    python docs/architecture.py        # matplotlib is one of lasagna's dependencies

The picture is committed; run this after changing the architecture, and commit both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from PIL import Image

PAPER = "#dbe8f6"  # the paper's model
FROZEN = "#e8e8e8"  # frozen in the paper's recipe
ADDON = "#fbe3c8"  # the add-ons that are not the paper's
IO = "#ffffff"


def box(ax, x: float, y: float, w: float, h: float, text: str, fill: str, dashed: bool = False, size: int = 10):
    """A rounded box with centred text; (x, y) is its lower-left corner in data units."""
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.12",
            facecolor=fill,
            edgecolor="#333333",
            linewidth=1.2,
            linestyle="--" if dashed else "-",
        )
    )
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)


def arrow(ax, start: tuple[float, float], end: tuple[float, float], label: str = "", dashed: bool = False, rad=0.0):
    """An arrow from start to end, its label beside the middle."""
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=12,
            linewidth=1.1,
            color="#333333",
            linestyle="--" if dashed else "-",
            connectionstyle=f"arc3,rad={rad}",
        )
    )
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx, my + 0.12, label, ha="center", va="bottom", fontsize=8, color="#333333")


def draw(out: Path) -> Path:
    """Draw the picture into `out` (PNG)."""
    matplotlib.use("Agg")  # why: draws to a file, on machines without a display too
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5.8), dpi=100)
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 5.7)
    ax.axis("off")

    # inputs
    box(ax, 0.2, 4.6, 1.7, 0.9, "class list\n(chunks of 16)\nor a query", IO, size=9)
    box(ax, 0.2, 3.1, 1.7, 0.8, "image", IO)
    # the language side
    box(ax, 2.5, 4.65, 3.8, 0.8, "prompt tokens: system, <image>, the list", IO, size=9)
    arrow(ax, (1.9, 5.05), (2.5, 5.05))
    # the image side: encoded once per image, whatever the number of chunks or queries
    box(ax, 2.5, 3.1, 1.9, 0.8, "vision tower\n(CLIP ViT)", FROZEN)
    box(ax, 4.9, 3.1, 1.4, 0.8, "projector", PAPER)
    box(ax, 2.5, 1.6, 1.9, 0.8, "SAM image\nencoder", FROZEN)
    arrow(ax, (1.9, 3.5), (2.5, 3.5))
    arrow(ax, (1.6, 3.1), (2.5, 2.0), rad=0.2)
    arrow(ax, (4.4, 3.5), (4.9, 3.5))
    box(ax, 6.9, 3.0, 1.9, 2.5, "LLM\n(causal,\nLLaMA-style)\n\nshared prefix\nin a KV cache", PAPER)
    arrow(ax, (6.3, 3.5), (6.9, 3.5), label="image tokens")
    arrow(ax, (6.3, 5.05), (6.9, 5.05))
    # outputs of the LLM
    box(ax, 9.55, 4.7, 2.4, 0.8, "answer, template-decoded:\nsky<ins>, red circle<no_ins>", IO, size=8)
    arrow(ax, (8.8, 5.1), (9.55, 5.1))
    box(ax, 9.55, 3.1, 2.4, 0.8, "text projector", PAPER)
    arrow(ax, (8.8, 3.5), (9.55, 3.5))
    ax.text(9.17, 3.4, "state before\neach <ins>", fontsize=7, ha="center", va="top")
    box(ax, 9.55, 1.6, 2.4, 0.8, "SAM prompt encoder\n+ mask decoder", PAPER, size=9)
    arrow(ax, (10.75, 3.1), (10.75, 2.4))
    ax.text(10.85, 2.75, "one prompt per <ins>", fontsize=8, va="center")
    arrow(ax, (4.4, 2.0), (9.55, 2.0), label="image embedding (computed once, read by every slot)")
    box(ax, 9.55, 0.2, 2.4, 0.8, "one mask per\npresent class", IO, size=9)
    arrow(ax, (10.75, 1.6), (10.75, 1.0))
    # the add-ons: beside the model, plugged into the inference engine's decision
    box(
        ax,
        2.9,
        0.1,
        5.9,
        1.1,
        "judges/ (not the paper's): presence verifier, query verifier, instance picker.\n"
        "They read SAM's features under each slot's mask and the words of the slot;\n"
        "their log-odds, fused with the LLM's, decide present or absent;\n"
        "the picker keeps the pieces of a query's mask that its words mean.",
        ADDON,
        dashed=True,
        size=8,
    )
    arrow(ax, (9.55, 1.75), (8.8, 1.0), dashed=True)
    arrow(ax, (8.8, 0.6), (9.55, 0.6), dashed=True)

    legend = [(PAPER, "the paper's model (model/)"), (FROZEN, "frozen in the paper"), (ADDON, "add-ons (judges/)")]
    for i, (color, text) in enumerate(legend):
        box(ax, 0.2, 1.1 - i * 0.5, 0.3, 0.3, "", color)
        ax.text(0.6, 1.25 - i * 0.5, text, fontsize=8, va="center")

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    with Image.open(out) as drawn:  # why: a few flat colours; a palette keeps the committed file small
        small = drawn.convert("RGB").quantize(colors=64, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    small.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".png"), help="the PNG to write")
    args = parser.parse_args(argv)
    print(f"wrote {draw(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
