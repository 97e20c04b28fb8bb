"""Converting released checkpoints: a tiny model written in the released layout converts back exactly."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPVisionConfig

from helpers import make_inputs, write_released_tokenizer
from lasagna.checkpoint import load_pretrained
from lasagna.cli import main
from lasagna.config import preset
from lasagna.convert.infer import sam_config_from_shapes
from lasagna.convert.keymap import CLIP_PREFIX, KeyMapError, match_rule, official_rules
from lasagna.convert.official import convert_official
from lasagna.convert.sam import load_sam_weights
from lasagna.model.lasagna import LasagnaModel
from lasagna.tokenization import build_plain_tokenizer
from lasagna.tokens import IMAGE_TOKEN_ID, token_ids

# The 923 names and shapes of the released LaSagnA-7B; a copy in tests/data wins over the shared reference.
_VENDORED = Path(__file__).parents[1] / "data" / "official_lasagna_7b_keys.json"
OFFICIAL_KEYS = _VENDORED if _VENDORED.exists() else Path("/work/shared/reference/official_lasagna_7b_keys.json")
CORPUS = ["wall, bed, sky, red circle, blue square, tree, floor, person", "Segment this image."] * 4


def official_names_for(model: LasagnaModel) -> dict[str, str]:
    """Inverse of the key map for a tiny model: {official name: our name}.

    Taken from the real official key list, keeping the block indices the tiny model has, so the released layout in
    these tests uses names that exist in the published checkpoint.
    """
    ours = {k for k in model.state_dict() if not k.startswith(CLIP_PREFIX)}
    names = {}
    for name in json.loads(OFFICIAL_KEYS.read_text()):
        target = match_rule(name, official_rules()).apply(name)
        if target in ours:
            names[name] = target
    assert set(names.values()) == ours
    return names


def write_release(model: LasagnaModel, tokenizer, folder: Path, shards: int = 2, safetensors: bool = False) -> None:
    """`model` as a released HF folder: official names, sharded weights + index, llava config.json, tokenizer.

    `tokenizer`: a tokenizer to save, or a folder whose files are copied as they are.
    """
    folder.mkdir(parents=True)
    state = model.state_dict()
    official = {name: state[ours].clone() for name, ours in official_names_for(model).items()}
    head_dim = model.cfg.llm.hidden_size // model.cfg.llm.num_attention_heads
    for i in range(model.cfg.llm.num_hidden_layers):  # the 4.31 persistent buffer the converter must drop
        official[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.rand(head_dim // 2)
    names = sorted(official)
    ext, stem = (".safetensors", "model") if safetensors else (".bin", "pytorch_model")
    weight_map = {}
    for k in range(shards):
        file = f"{stem}-{k + 1:05d}-of-{shards:05d}{ext}"
        part = {n: official[n] for n in names[k::shards]}
        if safetensors:
            save_file(part, str(folder / file))
        else:
            torch.save(part, folder / file)
        weight_map.update(dict.fromkeys(part, file))
    index = folder / f"{stem}{ext}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    llm = model.cfg.llm
    hf = {
        "model_type": "llava",
        "architectures": ["LaSagnAForCausalLM"],
        "vocab_size": llm.vocab_size,
        "hidden_size": llm.hidden_size,
        "intermediate_size": llm.intermediate_size,
        "num_hidden_layers": llm.num_hidden_layers,
        "num_attention_heads": llm.num_attention_heads,
        "num_key_value_heads": llm.num_key_value_heads,
        "max_position_embeddings": llm.max_position_embeddings,
        "rms_norm_eps": llm.rms_norm_eps,
        "mm_hidden_size": model.cfg.vision.hidden_size,
        "mm_vision_select_layer": model.cfg.vision.feature_layer,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": True,
        "out_dim": model.cfg.sam.prompt_dim,
        "train_mask_decoder": True,
        "vision_tower": "openai/clip-vit-large-patch14",
    }
    (folder / "config.json").write_text(json.dumps(hf))
    if isinstance(tokenizer, Path):
        for path in tokenizer.iterdir():
            (folder / path.name).write_bytes(path.read_bytes())
    else:
        tokenizer.save_pretrained(str(folder))


def write_clip(model: LasagnaModel, folder: Path, whole_clip: bool = False) -> None:
    """The vision tower as a CLIPVisionModel folder (`vision_model.*`), or as a CLIPModel with a text tower."""
    folder.mkdir(parents=True)
    v = model.cfg.vision
    vision = dict(
        hidden_size=v.hidden_size,
        intermediate_size=v.intermediate_size,
        num_hidden_layers=v.num_hidden_layers,
        num_attention_heads=v.num_attention_heads,
        image_size=v.image_size,
        patch_size=v.patch_size,
    )
    state = {
        "vision_model." + k[len(CLIP_PREFIX) :]: t.clone()
        for k, t in model.state_dict().items()
        if k.startswith(CLIP_PREFIX)
    }
    if whole_clip:
        CLIPConfig(vision_config=vision).save_pretrained(str(folder))
        state |= {
            "text_model.embeddings.token_embedding.weight": torch.zeros(8, 4),
            "text_model.embeddings.position_ids": torch.arange(8)[None],
            "vision_model.embeddings.position_ids": torch.arange(17)[None],
            "text_projection.weight": torch.zeros(4, 4),
            "visual_projection.weight": torch.zeros(4, v.hidden_size),
            "logit_scale": torch.tensor(2.0),
        }
    else:
        CLIPVisionConfig(**vision).save_pretrained(str(folder))
    save_file(state, str(folder / "model.safetensors"))


@pytest.fixture
def release(tmp_path):
    """A seeded tiny model, its tokenizer, and both written in the released layout."""
    tokenizer = build_plain_tokenizer(CORPUS, vocab_size=300)
    cfg = preset("tiny")
    cfg.llm.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    model = LasagnaModel(cfg).eval()
    ids = token_ids(tokenizer)
    model.set_token_ids(ids.ins, ids.pad)
    write_release(model, tokenizer, tmp_path / "release")
    write_clip(model, tmp_path / "clip")
    return model, tokenizer, tmp_path


def forward(model: LasagnaModel, ins: int):
    img = IMAGE_TOKEN_ID
    inputs = make_inputs([[1, img, 5, 6, ins, 7, ins, 2], [1, img, 8, ins, 2]], [0, 1], [(20, 30), (16, 16)])
    with torch.no_grad():
        return model(inputs)


def test_released_layout_converts_to_the_same_model(release, capsys):
    model, tokenizer, tmp = release
    out = tmp / "converted"
    argv = ["convert", "official", "--src", str(tmp / "release"), "--clip", str(tmp / "clip"), "--out", str(out)]
    assert main([*argv, "--dtype", "fp32", "--sam-decoder-heads", "2"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    converted, tok = load_pretrained(out)
    expected = dataclasses.replace(model.cfg, tokenization="llama431", default_decoder="free")
    assert converted.cfg == expected
    assert token_ids(tok) == token_ids(tokenizer)
    a, b = forward(model, converted.ins_id), forward(converted, converted.ins_id)
    assert a.mask_embeddings.shape[0] == 3
    assert torch.equal(a.logits, b.logits)
    assert len(a.mask_logits) == len(b.mask_logits) == 2
    assert all(torch.equal(x, y) for x, y in zip(a.mask_logits, b.mask_logits, strict=True))
    # an existing output is refused without --overwrite and replaced with it
    assert main([*argv, "--dtype", "fp32", "--sam-decoder-heads", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--sam-decoder-heads", "2", "--overwrite"]) == 0
    assert load_pretrained(out)[0].llm.lm_head.weight.dtype == torch.bfloat16


def test_safetensors_source_whole_clip_and_small_shards(tmp_path):
    tokenizer = build_plain_tokenizer(CORPUS, vocab_size=300)
    cfg = preset("tiny")
    cfg.llm.vocab_size = len(tokenizer)
    torch.manual_seed(1)
    model = LasagnaModel(cfg)
    write_release(model, tokenizer, tmp_path / "release", shards=3, safetensors=True)
    write_clip(model, tmp_path / "clip", whole_clip=True)
    out = tmp_path / "out"
    report = convert_official(
        tmp_path / "release", out, tmp_path / "clip", sam_decoder_heads=2, max_shard_bytes=200_000
    )
    assert "logit_scale" in report.skipped and "model.layers.1.self_attn.rotary_emb.inv_freq" in report.skipped
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    converted, _ = load_pretrained(out)
    for name, original in model.state_dict().items():
        assert torch.equal(converted.state_dict()[name], original.to(torch.bfloat16)), name


def test_unknown_key_is_an_error_naming_it_and_writes_nothing(release):
    _, _, tmp = release
    bin_file = tmp / "release" / "pytorch_model-00001-of-00002.bin"
    state = torch.load(bin_file, weights_only=True)
    state["model.mystery_head.weight"] = torch.zeros(2)
    torch.save(state, bin_file)
    index = tmp / "release" / "pytorch_model.bin.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["model.mystery_head.weight"] = bin_file.name
    index.write_text(json.dumps(data))
    with pytest.raises(KeyMapError, match=re.escape("model.mystery_head.weight")):
        convert_official(tmp / "release", tmp / "out", tmp / "clip", sam_decoder_heads=2)
    assert not (tmp / "out").exists()
    assert not [p for p in tmp.iterdir() if p.name.startswith(".out")]


def test_missing_clip_is_an_error_that_says_what_to_pass(release, capsys):
    _, _, tmp = release
    assert main(["convert", "official", "--src", str(tmp / "release"), "--out", str(tmp / "out")]) == 2
    err = capsys.readouterr().err
    assert "--clip" in err and "openai/clip-vit-large-patch14" in err
    assert not (tmp / "out").exists()


def test_missing_lasagna_tokens_are_an_error(release):
    _, _, tmp = release
    path = tmp / "release" / "tokenizer.json"  # transformers 5 keeps the added tokens only here
    data = json.loads(path.read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<no_ins>"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="<no_ins>"):
        convert_official(tmp / "release", tmp / "out", tmp / "clip", sam_decoder_heads=2)


def test_convert_sam_round_trip_and_strict_loader(release, capsys):
    model, _, tmp = release
    prefix = "model.visual_model."
    original = {
        name[len(prefix) :]: model.state_dict()[ours].clone()
        for name, ours in official_names_for(model).items()
        if name.startswith(prefix)
    }
    torch.save(original, tmp / "sam_tiny.pth")
    out = tmp / "sam.safetensors"
    assert main(["convert", "sam", "--src", str(tmp / "sam_tiny.pth"), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    torch.manual_seed(5)
    fresh = LasagnaModel(model.cfg)
    load_sam_weights(fresh, out)
    for name, value in model.sam.state_dict().items():
        assert torch.equal(fresh.sam.state_dict()[name], value), name
    with safe_open(str(out), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    state.pop("sam.mask_decoder.iou_token.weight")
    save_file(state, str(tmp / "partial.safetensors"))
    with pytest.raises(ValueError, match=re.escape("sam.mask_decoder.iou_token.weight")):
        load_sam_weights(fresh, tmp / "partial.safetensors")
    wider = preset("tiny")
    wider.sam.mlp_dim *= 2
    with pytest.raises(ValueError, match=re.escape("sam.image_encoder.layers.0.mlp.lin1.weight: file [64, 32]")):
        load_sam_weights(LasagnaModel(wider), out)


def test_check_keys_on_the_official_list(capsys):
    assert main(["convert", "check-keys", "--official", str(OFFICIAL_KEYS)]) == 0
    line = "official keys: 923 mapped: 923 missing: 0 unexpected: 0 shape-mismatch: 0\n"
    assert capsys.readouterr().out == line
    assert main(["convert", "check-keys", "--official", str(OFFICIAL_KEYS), "--preset", "tiny", "--verbose"]) == 1
    out = capsys.readouterr().out
    assert "shape mismatch: lm_head.weight [32007, 4096] vs ours [512, 64]" in out


def test_sam_config_is_inferred_from_the_official_shapes():
    shapes = {k: tuple(v) for k, v in json.loads(OFFICIAL_KEYS.read_text()).items()}
    assert sam_config_from_shapes(shapes, "model.visual_model.") == preset("lasagna-7b").sam


@pytest.mark.parametrize(
    ("official", "ours"),
    [
        ("model.layers.3.self_attn.q_proj.weight", "llm.model.layers.3.self_attn.q_proj.weight"),
        ("model.mm_projector.weight", "projector.weight"),
        ("model.mm_projector.2.bias", "projector.2.bias"),
        ("model.text_hidden_fcs.0.2.weight", "text_projector.2.weight"),
        ("model.visual_model.image_encoder.blocks.7.norm2.bias", "sam.image_encoder.layers.7.layer_norm2.bias"),
        ("model.visual_model.image_encoder.neck.3.weight", "sam.image_encoder.neck.layer_norm2.weight"),
        ("model.visual_model.prompt_encoder.mask_downscaling.4.bias", "sam.prompt_encoder.mask_embed.layer_norm2.bias"),
        (
            "model.visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
            "sam.prompt_encoder.shared_embedding.positional_embedding",
        ),
        ("model.visual_model.mask_decoder.output_upscaling.1.weight", "sam.mask_decoder.upscale_layer_norm.weight"),
        (
            "model.visual_model.mask_decoder.output_hypernetworks_mlps.2.layers.1.weight",
            "sam.mask_decoder.output_hypernetworks_mlps.2.layers.0.weight",
        ),
        (
            "model.visual_model.mask_decoder.iou_prediction_head.layers.2.bias",
            "sam.mask_decoder.iou_prediction_head.proj_out.bias",
        ),
        (
            "model.visual_model.mask_decoder.transformer.layers.1.norm4.weight",
            "sam.mask_decoder.transformer.layers.1.layer_norm4.weight",
        ),
    ],
)
def test_hand_checked_name_pairs(official, ours):
    assert match_rule(official, official_rules()).apply(official) == ours


def write_sentencepiece_tokenizer(folder: Path) -> int:
    """A tiny tokenizer in the LaSagnA-7B layout (tokenizer.model + 4.31's json files); returns its length."""
    return write_released_tokenizer(folder, CORPUS * 20, vocab_size=60)


def test_sentencepiece_tokenizer_as_released(tmp_path):
    """The real release ships tokenizer.model + added_tokens.json (no tokenizer.json); ids must survive.

    Also: a CLIP folder saved by transformers 5 (no `vision_model.` prefix) is accepted.
    """
    folder = tmp_path / "spm"
    folder.mkdir()
    cfg = preset("tiny")
    cfg.llm.vocab_size = write_sentencepiece_tokenizer(folder)
    torch.manual_seed(2)
    model = LasagnaModel(cfg)
    write_release(model, folder, tmp_path / "release")
    model.vision_tower.save_pretrained(str(tmp_path / "clip"))  # transformers 5 writes the flat CLIP names
    convert_official(tmp_path / "release", tmp_path / "out", tmp_path / "clip", sam_decoder_heads=2)
    _, tok = load_pretrained(tmp_path / "out")
    ids = token_ids(tok)
    assert (ids.cat_start, ids.ins, ids.no_ins, ids.im_end) == (60, 63, 64, 66)
    assert (tmp_path / "out" / "tokenizer.model").read_bytes() == (folder / "tokenizer.model").read_bytes()
