"""Agreement of 8-bit and 4-bit loading with fp32, side by side on the same images (bitsandbytes on this machine's
device: its CPU kernels work too).

    python benchmarks/quantized.py [--model DIR] [--device auto] [--images examples/*.png]

For each setting: on how many images the present set equals fp32's, how many class answers (present / absent)
differ, and the mask IoU with fp32's masks over the classes both call present (mean and minimum). Settings: bf16
alone (the rounding of 16-bit weights), then 8bit and 4bit with the rest of the model in fp32 and in bf16.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lasagna.api import Lasagna

SETTINGS = {
    "bf16": {"dtype": "bf16"},
    "8bit (rest fp32)": {"dtype": "fp32", "quantize": "8bit"},
    "4bit (rest fp32)": {"dtype": "fp32", "quantize": "4bit"},
    "8bit (rest bf16)": {"dtype": "bf16", "quantize": "8bit"},
    "4bit (rest bf16)": {"dtype": "bf16", "quantize": "4bit"},
}
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--model", help="checkpoint folder (default: the embedded ShapeWorld model)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", nargs="+", type=Path, default=sorted(EXAMPLES.glob("*.png")))
    ap.add_argument("--classes-file", type=Path, default=EXAMPLES / "shapes-classes.txt")
    args = ap.parse_args()
    names = [line.strip() for line in args.classes_file.read_text().splitlines() if line.strip()]
    ref_model = Lasagna.from_pretrained(args.model, dtype="fp32", device=args.device)
    refs = [ref_model.segment(path, classes=names) for path in args.images]
    print(f"{len(args.images)} images x {len(names)} classes; reference: fp32 on {ref_model.info()['device']}")
    del ref_model
    print("| setting | same present set | answers differing | mask IoU mean | mask IoU min |")
    print("|---|---:|---:|---:|---:|")
    for setting, options in SETTINGS.items():
        model = Lasagna.from_pretrained(args.model, device=args.device, **options)
        same = flips = 0
        ious = []
        for path, ref in zip(args.images, refs, strict=True):
            pred = model.segment(path, classes=names)
            same += set(pred.present) == set(ref.present)
            for a, b in zip(ref.classes, pred.classes, strict=True):
                flips += a.present != b.present
                if a.mask is not None and b.mask is not None:
                    union = (a.mask | b.mask).sum()
                    ious.append(float((a.mask & b.mask).sum() / union) if union else 1.0)
        iou = f"{np.mean(ious):.3f} | {np.min(ious):.3f}" if ious else "- | -"
        print(f"| {setting} | {same}/{len(refs)} | {flips}/{len(refs) * len(names)} | {iou} |")


if __name__ == "__main__":
    main()
