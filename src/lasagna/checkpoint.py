"""Our checkpoint format: a folder that describes itself.

    config.json                       {"format": "lasagna", "format_version": 2, "model": ModelConfig,
                                       "judges": JudgesConfig (only where the model has judges beside it)}
    model.safetensors                 or model-0000k-of-0000n.safetensors + model.safetensors.index.json
    tokenizer files                   whatever the tokenizer's save_pretrained writes

Writes go to a temporary sibling folder that is renamed into place, so a failed save never leaves a half-written
checkpoint. Loading is strict: missing and unexpected keys are listed in the error.

The weights file holds the paper's model and, beside it under their own names, the judges (`lasagna.judges`), which
this module reads but does not build. Version 1 listed the judges among the model's fields; it is read as version 2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .atomic import write_atomic_dir, write_atomic_file
from .config import JudgesConfig, ModelConfig, from_dict, to_dict
from .model.lasagna import LasagnaModel

FORMAT = "lasagna"
FORMAT_VERSION = 2
JUDGE_FLAGS = ("presence_verifier", "query_verifier", "instance_picker")
"""Fields of a version-1 model config that name the judges (`JudgesConfig` since version 2)."""
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 4 * 1024**3


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be read as one of ours."""


def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state):
        nbytes = state[name].numel() * state[name].element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = state[name]
        size += nbytes
    return shards


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """safetensors refuses tensors that share or only view storage; copy just those (not a 7B model's worth)."""
    t = t.detach()
    whole = t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    return t if whole else t.contiguous().clone()


def save_weights(state: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
    """Write `state` as one safetensors file, or as shards plus an index when it is larger than a shard."""
    state = {k: _own_storage(v) for k, v in state.items()}
    shards = _shards(state, max_shard_bytes)
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(folder / WEIGHTS), metadata=meta)
        return
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata=meta)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Read model.safetensors or the shards listed by the index."""
    folder = Path(folder)
    if (folder / INDEX).exists():
        try:
            files = sorted(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{folder / INDEX} is not a weights index (a 'weight_map' of names): {err}") from err
    elif (folder / WEIGHTS).exists():
        files = [WEIGHTS]
    else:
        raise CheckpointError(f"{folder} has neither {WEIGHTS} nor {INDEX}")
    state = {}
    for name in files:
        path = folder / name
        if Path(name).name != name or not path.is_file():
            raise CheckpointError(f"{folder / INDEX} names a weights file that is not in {folder}: {name!r}")
        try:  # why broad: safetensors reports a truncated file or a header of absurd size by its own error type
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    state[key] = f.get_tensor(key)
        except Exception as err:
            raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from err
    return state


def check_keys(expected: set[str], got: set[str], what: str) -> None:
    """Strict-load check with a readable error: every missing and unexpected key is named."""
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing or unexpected:
        lines = [f"{what}: state dict does not match the model"]
        if missing:
            lines.append(
                f"  missing ({len(missing)}): " + ", ".join(missing[:50]) + (" ..." if len(missing) > 50 else "")
            )
        if unexpected:
            lines.append(
                f"  unexpected ({len(unexpected)}): "
                + ", ".join(unexpected[:50])
                + (" ..." if len(unexpected) > 50 else "")
            )
        raise CheckpointError("\n".join(lines))


def save_part(
    model: torch.nn.Module, path: Path, prefixes: tuple[str, ...], metadata: dict[str, str] | None = None
) -> Path:
    """The weights of `model` whose names start with one of `prefixes`, written atomically as safetensors."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k.startswith(prefixes)}
    return write_atomic_file(Path(path), lambda tmp: save_file(state, str(tmp), metadata=metadata))


def load_part(model: torch.nn.Module, path: Path, prefixes: tuple[str, ...], what: str) -> None:
    """Strictly load a part: every weight of `model` whose name starts with one of `prefixes`, none missing, none
    unknown under those prefixes. The file is one of save_part, or a whole checkpoint's weights file (the embedded
    model's encoders, say), whose other weights are left unread; a weight stored in another dtype is cast."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} weights not found: {path}")
    with safe_open(str(path), "pt") as f:  # why: read only the part's tensors, not a whole checkpoint's
        names = f.keys()  # a handle, not a dict: it cannot be iterated itself
        state = {k: f.get_tensor(k) for k in names if k.startswith(prefixes)}
    if not state:
        raise CheckpointError(f"{path} holds no {what} weights (none starts with {', '.join(prefixes)})")
    check_keys({k for k in model.state_dict() if k.startswith(prefixes)}, set(state), str(path))
    model.load_state_dict(state, strict=False)


@dataclass
class Header:
    """What `config.json` says of a checkpoint folder.

    vocabulary: the class names the model was trained on, where it knows no others (the embedded ShapeWorld model);
    None for an open-vocabulary model (released weights). palette: the RGB of each colour word its world uses, where
    it has one. source: where the weights came from, in words."""

    model: ModelConfig
    judges: JudgesConfig
    vocabulary: list[str] | None = None
    palette: dict[str, list[int]] | None = None
    source: str | None = None


def read_header(folder: Path) -> Header:
    """`config.json` of a checkpoint folder (either format version), checked field by field."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{folder} is not a lasagna checkpoint: {path} is missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else data
        raise CheckpointError(f"{path}: format {got!r} is not {FORMAT!r}")
    version = data.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise CheckpointError(f"{path}: format_version {version!r} is not 1 or {FORMAT_VERSION}")
    unknown = sorted(set(data) - {"format", "format_version", "model", "judges", "vocabulary", "palette", "source"})
    if unknown:
        raise CheckpointError(f"{path}: unknown field(s) {unknown}")
    model = data.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{path}: 'model' must be a mapping of the model's config, got {type(model).__name__}")
    model, judges = dict(model), data.get("judges", {})
    if version == 1:  # the judges were model fields
        judges = {k: model.pop(k) for k in JUDGE_FLAGS if k in model}
    vocabulary, source = data.get("vocabulary"), data.get("source")
    if vocabulary is not None and not (
        isinstance(vocabulary, list) and vocabulary and all(isinstance(n, str) and n.strip() for n in vocabulary)
    ):
        raise CheckpointError(f"{path}: 'vocabulary' must be a non-empty list of class names")
    if source is not None and not isinstance(source, str):
        raise CheckpointError(f"{path}: 'source' must be a string")
    palette = data.get("palette")
    if palette is not None and not (
        isinstance(palette, dict)
        and all(isinstance(v, list) and len(v) == 3 and all(isinstance(c, int) for c in v) for v in palette.values())
    ):
        raise CheckpointError(f"{path}: 'palette' must map colour names to [R, G, B] integers")
    try:
        cfg, judges = from_dict(ModelConfig, model, ".model"), from_dict(JudgesConfig, judges, ".judges")
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from err
    return Header(cfg, judges, vocabulary, palette, source)


def read_config(folder: Path) -> ModelConfig:
    return read_header(folder).model


def write_config(
    folder: Path, cfg: ModelConfig, judges: JudgesConfig | None = None, about: Header | None = None
) -> None:
    """config.json for `cfg` and `judges`, with the vocabulary, palette and source of `about` where it has them."""
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": to_dict(cfg)}
    if judges is not None and judges.any:
        header["judges"] = to_dict(judges)
    for name in ("vocabulary", "palette", "source"):
        if about is not None and getattr(about, name) is not None:
            header[name] = getattr(about, name)
    (Path(folder) / "config.json").write_text(json.dumps(header, indent=2) + "\n")


def save_pretrained(
    model: LasagnaModel,
    tokenizer,
    out: Path,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    judges: torch.nn.Module | None = None,
    about: Header | None = None,
) -> Path:
    """Save from the unwrapped module: weights (optionally cast to `dtype`), config and tokenizer; `judges` (a
    `lasagna.judges.Judges`, with its `cfg`) are saved beside the model; `about` gives the vocabulary, palette and
    source to keep (those of the checkpoint the model came from)."""
    state = dict(model.state_dict())
    if judges is not None:
        state.update(judges.state_dict())
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}

    def fill(tmp: Path) -> None:
        save_weights(state, tmp, max_shard_bytes)
        write_config(tmp, model.cfg, None if judges is None else judges.cfg, about)
        tokenizer.save_pretrained(str(tmp))

    return write_atomic_dir(Path(out), fill, overwrite=overwrite)


def _rebuild_buffers(model: LasagnaModel, device: torch.device) -> None:
    """Non-persistent buffers are not in the weights; recompute them after a meta-device build."""
    emb = model.vision_tower.embeddings
    emb.position_ids = torch.arange(emb.num_positions, device=device).expand(1, -1)
    backbone = model.llm.get_decoder()
    if hasattr(backbone, "rotary_emb"):
        backbone.rotary_emb = type(backbone.rotary_emb)(config=backbone.config).to(device)


def _adopt(model: LasagnaModel, state: dict[str, torch.Tensor], what: str) -> LasagnaModel:
    check_keys(set(model.state_dict()), set(state), what)
    model.load_state_dict(state, strict=True, assign=True)
    _rebuild_buffers(model, torch.device("cpu"))
    return model


def build_from_state(cfg: ModelConfig, state: dict[str, torch.Tensor], what: str) -> LasagnaModel:
    """Build on the meta device (no memory, no random init) and adopt the given tensors strictly."""
    with torch.device("meta"):
        model = LasagnaModel(cfg)
    return _adopt(model, state, what)


@dataclass
class Loaded:
    """A checkpoint folder read: the paper's model and its tokenizer, its `Header`, and the judges' weights (to be
    loaded strictly by `lasagna.judges`; empty when it has none)."""

    model: LasagnaModel
    tokenizer: object
    header: Header
    judges_state: dict[str, torch.Tensor]

    @property
    def judges(self) -> JudgesConfig:
        return self.header.judges


def load_checkpoint(folder: str | Path, dtype: torch.dtype | None = None, cfg: ModelConfig | None = None) -> Loaded:
    """Read one of our checkpoint folders; needs nothing else.

    cfg: the config to build instead of the folder's own (a training run's `model_overrides` on it). The model's
    weights load strictly; every other tensor must belong to a judge the config lists (else the load fails)."""
    from transformers.models.auto.tokenization_auto import AutoTokenizer

    from .tokens import token_ids

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {folder}")
    header = read_header(folder)
    judges = header.judges
    state = read_weights(folder)
    with torch.device("meta"):
        model = LasagnaModel(cfg or header.model)
    expected = set(model.state_dict())
    extra = {k: state.pop(k) for k in sorted(set(state) - expected)} if judges.any else {}
    model = _adopt(model, state, str(folder))
    if dtype is not None:
        model.to(dtype)
        extra = {k: v.to(dtype) if v.is_floating_point() else v for k, v in extra.items()}
    tokenizer = _read_tokenizer(folder, AutoTokenizer)
    try:
        ids = token_ids(tokenizer)
    except ValueError as err:
        raise CheckpointError(f"{folder}: {err}") from err
    model.set_token_ids(ids.ins, ids.pad, ids.no_ins)
    model.eval()
    return Loaded(model, tokenizer, header, extra)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def _read_tokenizer(folder: Path, auto):
    """The tokenizer saved beside the weights, with errors that name the file at fault."""
    present = [name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not present:
        raise CheckpointError(f"{folder} has no tokenizer: none of {list(TOKENIZER_FILES)} is there")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        path = folder / name
        if path.is_file():
            try:
                json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    try:
        return auto.from_pretrained(str(folder))
    except Exception as err:  # why broad: transformers raises many types, some naming a missing library instead
        raise CheckpointError(f"cannot read the tokenizer in {folder} ({', '.join(present)}): {err}") from err


def load_pretrained(
    folder: str | Path, dtype: torch.dtype | None = None, cfg: ModelConfig | None = None
) -> tuple[LasagnaModel, object]:
    """(model, tokenizer) of one of our checkpoint folders: the paper's model alone (`load_checkpoint` keeps the
    judges' weights too)."""
    loaded = load_checkpoint(folder, dtype, cfg)
    return loaded.model, loaded.tokenizer
