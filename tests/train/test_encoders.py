import pytest
import torch
from safetensors.torch import save_file

from lasagna.config import preset
from lasagna.model.lasagna import LasagnaModel
from lasagna.train import decoder as dec
from lasagna.train import encoder_heads as heads
from lasagna.train import encoders as enc
from lasagna.train.config import load_train_config
from lasagna.train.encoder_heads import image_targets, patch_targets, word_matrix
from lasagna.train.encoders import EncoderPretrainConfig, pretrain_encoders
from lasagna.train.fit import fit


def test_word_matrix_splits_class_names_into_shared_words():
    words, matrix = word_matrix(["sky", "red circle", "blue circle"])
    assert words == ["blue", "circle", "red", "sky"]
    assert matrix.tolist() == [[0, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0]]


def test_patch_targets_are_the_fraction_of_each_patch_each_word_covers():
    _, matrix = word_matrix(["sky", "red circle", "blue circle"])
    # 4x4 map, 2x2 grid: top-left patch all sky; top-right half red circle, half blue circle; bottom all red circle.
    semantic = torch.tensor([[[0, 0, 1, 1], [0, 0, 2, 2], [1, 1, 1, 1], [1, 1, 1, 1]]])
    t = patch_targets(semantic, matrix, 2)
    assert t.shape == (1, 4, 4)
    assert t[0, 0].tolist() == [0, 0, 0, 1]  # sky
    assert t[0, 1].tolist() == [0.5, 1.0, 0.5, 0]  # circle covers it all, each colour half
    assert t[0, 2].tolist() == [0, 1, 1, 0]


def test_patch_class_targets_bind_colour_to_shape():
    _, matrix = word_matrix(["sky", "red circle", "blue circle"])
    semantic = torch.tensor([[[0, 0, 1, 1], [0, 0, 2, 2], [1, 1, 1, 1], [1, 1, 1, 1]]])
    t = patch_targets(semantic, matrix, 2, with_classes=True)
    assert t.shape == (1, 4, 3 + 4)
    # classes sky, red circle, blue circle | words blue, circle, red, sky
    assert t[0, 1].tolist() == [0, 0.5, 0.5, 0.5, 1.0, 0.5, 0]
    assert t[0, 2].tolist() == [0, 1, 0, 0, 1, 1, 0]


def test_softmax_heads_learn_the_class_fractions_and_score_things_apart():
    semantic = torch.tensor([[[0, 0, 1, 1], [0, 0, 2, 2], [1, 1, 1, 1], [1, 1, 1, 1]]])
    fractions = heads.class_fractions(semantic, 3, 2)
    assert fractions[0].tolist() == [[1, 0, 0], [0, 0.5, 0.5], [0, 1, 0], [0, 1, 0]]
    # the loss is lowest at the fractions themselves: a soft cross-entropy, not a multi-label BCE
    exact = heads.head_loss("vision_ce", fractions.clamp(min=1e-6).log(), fractions)
    assert exact < heads.head_loss("vision_ce", torch.zeros(1, 4, 3), fractions)
    # balanced: the one patch of a rare class weighs as much as the three of a common one
    labels = torch.tensor([[[1.0, 0], [1, 0], [1, 0], [0, 1]]])
    wrong_rare = torch.tensor([[[5.0, 0], [5, 0], [5, 0], [5, 0]]])
    wrong_common = torch.tensor([[[0.0, 5], [0, 5], [0, 5], [0, 5]]])
    assert heads.balanced_ce(wrong_rare, labels) == pytest.approx(heads.balanced_ce(wrong_common, labels))
    # patches 0 (sky), 2 and 3 (red circle) are clear; patch 1 (half and half) is not scored
    logits = torch.tensor([[[9.0, 0, 0], [0, 0, 9], [0, 9, 0], [0, 0, 9]]])
    scores = enc._ce_accuracy("vision_ce", logits, fractions, is_thing=torch.tensor([False, True, True]))
    assert scores == {"vision_ce_accuracy": round(2 / 3, 4), "vision_ce_thing_accuracy": 0.5}


def test_object_heads_pool_each_objects_patches_by_its_share_of_them():
    # 4x4 instance map, 2x2 grid: object 1 fills the top-left patch and half the top-right; object 2 the other half
    instances = torch.tensor([[[1, 1, 1, 1], [1, 1, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]]])
    weights = heads.object_weights(instances, 2, 3)  # room for 3 objects; this scene has 2
    assert weights[0].tolist() == [[1, 0.5, 0, 0], [0, 0.5, 0, 0], [0, 0, 0, 0]]
    features = torch.tensor([[[2.0, 0], [4, 1], [9, 9], [9, 9]]])
    pooled = heads.pool_objects(features, weights)
    assert torch.allclose(pooled[0], torch.tensor([[(2 + 0.5 * 4) / 1.5, 0.5 / 1.5], [4, 1], [0, 0]]))
    # the object loss scores only the objects a scene has (-1: none)
    logits = torch.tensor([[[0.0, 9], [9, 0], [0, 0]]])
    assert heads.head_loss("sam_obj", logits, torch.tensor([[1, 0, -1]])) < 1e-3
    assert heads.head_loss("sam_obj", logits, torch.tensor([[0, 1, -1]])) > 8


def test_cell_shares_are_the_one_hot_map_averaged_over_each_cell():
    labels = torch.randint(0, 5, (3, 12, 8), generator=torch.Generator().manual_seed(0))
    for grid in (1, 2, 4):
        pooled = torch.nn.functional.avg_pool2d(
            torch.nn.functional.one_hot(labels, 5).permute(0, 3, 1, 2).float(), (12 // grid, 8 // grid)
        )
        assert torch.equal(heads.cell_shares(labels, 5, grid), pooled.flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match="12 x 8 label map does not split into 3 x 3"):
        heads.cell_shares(labels, 5, 3)


def test_image_targets_name_present_classes_then_their_words():
    _, matrix = word_matrix(["sky", "red circle", "blue circle"])
    semantic = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [2, 2]]])
    assert image_targets(semantic, matrix).tolist() == [
        [1, 1, 0, 0, 1, 1, 1],  # sky, red circle | words blue, circle, red, sky
        [0, 0, 1, 1, 1, 0, 0],
    ]


def _encoder_state(model):
    return {
        k: v.clone() for k, v in model.state_dict().items() if k.startswith(("vision_tower.", "sam.image_encoder."))
    }


def test_pretraining_changes_only_the_encoders_saves_them_and_leaves_the_rng_alone(tmp_path):
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.vision.drop_cls, cfg.vision.feature_norm = False, True  # as shapeworld-small: the CLS head trains too
    model = LasagnaModel(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    summary = pretrain_encoders(
        model,
        EncoderPretrainConfig(
            steps=3, batch_size=2, warmup_steps=1, patch_classes=True, patch_ce=True, object_ce=True, eval_every=2
        ),
        32,
        0,
        tmp_path,
        bf16=False,
    )
    assert torch.equal(torch.get_rng_state(), rng)
    assert 0 <= summary["vision_recall"] <= 1 and 0 <= summary["cls_recall"] <= 1 and summary["steps"] == 3
    assert 0 <= summary["vision_ce_thing_accuracy"] <= 1 and 0 <= summary["sam_ce_accuracy"] <= 1
    assert 0 <= summary["vision_obj_accuracy"] <= 1 and 0 <= summary["sam_obj_accuracy"] <= 1
    assert [p["step"] for p in summary["curve"]] == [2] and "sam_obj_accuracy" in summary["curve"][0]
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("vision_tower.", "sam.image_encoder.")) for k in changed)

    fresh = LasagnaModel(cfg)
    enc.load_encoders(fresh, tmp_path / enc.ENCODERS_FILE)
    assert all(torch.equal(v, _encoder_state(model)[k]) for k, v in _encoder_state(fresh).items())
    assert enc.encoder_configs(tmp_path / enc.ENCODERS_FILE) == (cfg.vision, cfg.sam)


def test_encoder_configs_is_none_for_a_file_without_them(tmp_path):
    model = LasagnaModel(preset("tiny"))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "bare.safetensors"))
    assert enc.encoder_configs(tmp_path / "bare.safetensors") is None
    saved = enc.save_encoders(model, tmp_path, {})
    assert enc.encoder_configs(saved) == (model.cfg.vision, model.cfg.sam)
    assert enc.encoders_preset(saved, "shapeworld-small").sam == model.cfg.sam


def test_encoders_preset_guesses_the_stems_of_a_file_without_configs(tmp_path):
    plain = {"vision_tower.embeddings.patch_embedding.weight": torch.zeros(1)}
    save_file(plain, str(tmp_path / "old.safetensors"))
    cfg = enc.encoders_preset(tmp_path / "old.safetensors")
    assert cfg.vision.conv_stem == [] and cfg.sam.conv_stem == preset("shapeworld-small").sam.conv_stem


def test_loading_encoders_of_another_model_names_the_bad_keys(tmp_path):
    model = LasagnaModel(preset("tiny"))
    enc.save_encoders(model, tmp_path, {})
    other = preset("tiny")
    other.vision.num_hidden_layers = 3
    with pytest.raises(ValueError, match="missing"):
        enc.load_encoders(LasagnaModel(other), tmp_path / enc.ENCODERS_FILE)


def test_fit_runs_stages_0_and_0b_once_and_a_resume_reuses_them(tmp_path, monkeypatch):
    overrides = [
        f"out_dir={tmp_path}",
        "model_preset=tiny",
        "tokenizer_vocab=300",
        "tokenizer_corpus=20",
        "data.image_size=32",
        "optim.batch_size=1",
        "optim.steps=1",
        "optim.warmup_steps=0",
        "eval.limit=0",
        "bf16=false",
        "encoders.steps=2",
        "encoders.batch_size=2",
        "decoder.steps=1",
        "decoder.batch_size=1",
    ]
    calls = []

    def counting(real):
        def call(*args, **kwargs):
            calls.append(real.__name__)
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr("lasagna.train.stages.pretrain_encoders", counting(enc.pretrain_encoders))
    monkeypatch.setattr("lasagna.train.stages.pretrain_decoder", counting(dec.pretrain_decoder))
    fit(load_train_config(None, overrides))
    assert (tmp_path / enc.ENCODERS_FILE).exists() and (tmp_path / dec.DECODER_FILE).exists()
    assert calls == ["pretrain_encoders", "pretrain_decoder"]
    fit(load_train_config(None, [*overrides, "optim.steps=2"]), resume=True)
    assert len(calls) == 2


def test_feature_norm_applies_the_towers_post_layernorm_to_the_read_layer():
    from lasagna.model.mllm import vision_features

    cfg = preset("tiny")
    cfg.vision.feature_norm = True
    model = LasagnaModel(cfg)
    with torch.no_grad():
        model.vision_tower.post_layernorm.bias.fill_(0.5)
        pixels = torch.randn(2, 3, 32, 32)
        raw = model.vision_tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        expected = torch.nn.functional.layer_norm(raw, (raw.shape[-1],), eps=cfg.vision.layer_norm_eps) + 0.5
        assert torch.allclose(vision_features(model.vision_tower, cfg.vision, pixels), expected, atol=1e-5)
