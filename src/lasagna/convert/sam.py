"""The original SAM checkpoint (e.g. sam_vit_h_4b8939.pth) -> a safetensors file in our `sam.*` names, and its loader.

Training the 7B recipe from scratch starts SAM from these weights (LaSagnA freezes the image and prompt encoders),
so the file holds exactly the `sam.*` keys of a LasagnaModel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..atomic import write_atomic_file
from ..checkpoint import check_keys
from ..config import SamConfig
from ..model.lasagna import LasagnaModel
from ..model.sam import SamSegmenter
from .infer import sam_config_from_shapes
from .keymap import plan_keys, sam_rules
from .sources import load_torch_file

SAM_PREFIX = "sam."


@dataclass
class SamConvertReport:
    out: Path
    config: SamConfig  # inferred from the shapes (decoder heads: SAM's fixed 8)
    tensors: int


def convert_sam(src: str | Path, out: str | Path, overwrite: bool = False) -> SamConvertReport:
    """Map every key of an original SAM state dict to our `sam.*` names and write `out` (temp file, then rename).

    The mapping and shapes are checked against a meta-device SamSegmenter built from the inferred sizes.
    """
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise FileNotFoundError(f"SAM checkpoint not found: {src}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if out.suffix != ".safetensors":
        raise ValueError(f"output {out} must end in .safetensors")
    state = load_torch_file(src)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    cfg = sam_config_from_shapes(shapes, prefix="")
    with torch.device("meta"):
        sam = SamSegmenter(cfg)
    ours = {SAM_PREFIX + k: tuple(v.shape) for k, v in sam.state_dict().items()}
    plan = plan_keys(shapes, sam_rules(""), ours)
    plan.raise_if_bad(f"SAM checkpoint {src}")
    tensors = {plan.mapping[k]: state[k].to(copy=True).contiguous() for k in plan.mapping}
    write_atomic_file(out, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt", "source": src.name}))
    return SamConvertReport(out=out, config=cfg, tensors=len(tensors))


def load_sam_weights(model: LasagnaModel, path: str | Path) -> None:
    """Load a `convert sam` file into `model.sam`, strictly: every `sam.*` key present, nothing else, same shapes.

    Tensors are cast to the dtype of the parameter they fill.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SAM weights not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a mapping
    expected = model.sam.state_dict()
    check_keys({SAM_PREFIX + k for k in expected}, set(state), f"SAM weights {path}")
    bad = [
        f"{SAM_PREFIX}{k}: file {list(state[SAM_PREFIX + k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if state[SAM_PREFIX + k].shape != v.shape
    ]
    if bad:
        raise ValueError(f"SAM weights {path} do not fit the model's SAM config:\n  " + "\n  ".join(bad))
    model.sam.load_state_dict({k: state[SAM_PREFIX + k].to(v.dtype) for k, v in expected.items()}, strict=True)
