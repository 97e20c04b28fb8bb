import pytest
import torch

from helpers import make_inputs
from lasagna.checkpoint import build_from_state, read_config, write_config
from lasagna.config import preset
from lasagna.losses import lasagna_loss
from lasagna.model.build import TrainableConfig, configure_trainable
from lasagna.model.lasagna import LasagnaModel, grid_code
from lasagna.model.mllm import expand_images, pool_features
from lasagna.model.sam import sincos_grid
from lasagna.tokens import IGNORE_INDEX, IMAGE_TOKEN_ID

IMG = IMAGE_TOKEN_ID
INS = 10


def test_tiny_builds_fast_and_has_the_boxes():
    import time

    start = time.perf_counter()
    model = LasagnaModel(preset("tiny"))
    assert time.perf_counter() - start < 1.0
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == {"vision_tower", "projector", "llm", "sam", "text_projector"}


def test_a_seeded_model_draws_each_part_alone_so_the_vocabulary_size_moves_only_the_llm():
    small, large = preset("tiny"), preset("tiny")
    large.llm.vocab_size = small.llm.vocab_size + 37
    torch.manual_seed(1)
    before = torch.get_rng_state()
    a, b = LasagnaModel(small, seed=3), LasagnaModel(large, seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is left alone
    for part in ("vision_tower", "projector", "sam", "text_projector"):
        pa, pb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert all(torch.equal(pa[k], pb[k]) for k in pa), part
    other = LasagnaModel(small, seed=4)
    assert not torch.equal(a.sam.mask_decoder.iou_token.weight, other.sam.mask_decoder.iou_token.weight)


def test_forward_backward_gradients_follow_trainable_config(tiny_model):
    counts = configure_trainable(tiny_model, TrainableConfig())
    assert counts["trainable"] > 0 and counts["frozen"] > 0
    inputs = make_inputs([[1, IMG, 5, 6, INS, 7, INS, 2], [1, IMG, 8, INS, 2]], [0, 1], [(20, 30), (16, 16)])
    out = tiny_model(inputs)
    gt = [torch.zeros(2, 20, 30), torch.ones(1, 16, 16)]
    loss = lasagna_loss(out.logits, out.labels, out.mask_logits, gt)
    loss.total.backward()
    for name, p in tiny_model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"trainable {name} got no gradient"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert any("mask_decoder" in n for n in trainable)
    assert not any("image_encoder" in n or "vision_tower" in n or "q_proj.base_layer" in n for n in trainable)


def test_full_training_switches_everything_on(tiny_model):
    cfg = TrainableConfig(
        lora_r=0,
        llm_full=True,
        vision_tower=True,
        image_projector=True,
        sam_image_encoder=True,
        sam_prompt_encoder=True,
    )
    configure_trainable(tiny_model, cfg)
    frozen = {n for n, p in tiny_model.named_parameters() if not p.requires_grad}
    # only the heads that single-mask output never reads stay frozen
    assert frozen and all("iou_prediction_head" in n or "output_hypernetworks_mlps" in n for n in frozen)
    assert not any("output_hypernetworks_mlps.0." in n for n in frozen)
    with pytest.raises(ValueError, match="llm_full"):
        configure_trainable(LasagnaModel(preset("tiny")), TrainableConfig(llm_full=True))


def test_image_expansion_places_features_by_id():
    emb = torch.nn.Embedding(20, 4)
    ids = torch.tensor([[1, IMG, 5, 2, 0], [1, 3, 4, IMG, 2]])
    feats = torch.arange(2 * 3 * 4, dtype=torch.float).reshape(2, 3, 4) + 100
    labels = ids.masked_fill(ids == IMG, IGNORE_INDEX)
    out = expand_images(emb, ids, (ids != 0).long(), feats, pad_id=0, labels=labels)
    assert out.embeds.shape == (2, 7, 4)
    assert out.input_ids.tolist() == [[1, IMG, IMG, IMG, 5, 2, 0], [1, 3, 4, IMG, IMG, IMG, 2]]
    assert out.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1, 0], [1] * 7]
    torch.testing.assert_close(out.embeds[0, 1:4], feats[0])
    torch.testing.assert_close(out.embeds[1, 3:6], feats[1])
    torch.testing.assert_close(out.embeds[1, 6], emb.weight[2])
    assert out.labels[1, 3:6].tolist() == [IGNORE_INDEX] * 3
    with pytest.raises(ValueError, match="exactly one <image>"):
        expand_images(emb, torch.tensor([[1, 2, 3]]), torch.ones(1, 3), feats[:1], pad_id=0)


def test_ins_embeddings_are_states_before_ins_grouped_per_image(tiny_model):
    # three conversations: two about image 0, one about image 1
    rows = [[1, IMG, 5, INS, 6, INS, 2], [1, IMG, 7, INS, 2], [1, IMG, 8, 9, INS, 2]]
    inputs = make_inputs(rows, [0, 0, 1], [(12, 12), (9, 7)])
    images = tiny_model.encode_images(inputs.clip_pixels, inputs.sam_pixels)
    expanded = tiny_model.expand(inputs, images)
    n = images.llm_feats.shape[1]
    hidden = torch.arange(expanded.input_ids.numel(), dtype=torch.float)[:, None].repeat(1, 64)
    hidden = hidden.reshape(*expanded.input_ids.shape, 64)
    with torch.no_grad():
        tiny_model.text_projector[0].weight.copy_(torch.eye(64))
        tiny_model.text_projector[0].bias.zero_()
    _, rows_of = tiny_model.select_mask_embeddings(hidden, expanded.input_ids)
    assert rows_of.tolist() == [0, 0, 1, 2]
    # recover the selected positions through the identity first layer
    picked = tiny_model.text_projector[1](tiny_model.text_projector[0](hidden[expanded.input_ids.roll(-1, 1) == INS]))
    width = expanded.input_ids.shape[1]
    positions = [int(v) % width for v in picked[:, 0]]
    # original token before each <ins> shifted by n - 1 image positions
    assert positions == [2 + n - 1, 4 + n - 1, 2 + n - 1, 3 + n - 1]
    out = tiny_model(inputs)
    assert [tuple(m.shape) for m in out.mask_logits] == [(3, 12, 12), (1, 9, 7)]


def test_sam_position_embedding_starts_as_a_sine_cosine_code_that_tells_every_cell_apart():
    code = sincos_grid(4, 8)
    assert code[0, 0].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]  # sin 0, cos 0 for x then y
    assert torch.allclose(code[2, 1, :2], torch.tensor([1.0, 1e-2]).sin())  # x = 1 at frequencies 1 and 1/100
    cells = code.reshape(16, 8)
    assert torch.cdist(cells, cells).add(torch.eye(16)).min() > 0.1  # no two cells share a code
    model = LasagnaModel(preset("tiny"))
    pos = model.sam.image_encoder.pos_embed
    assert torch.equal(pos[0], sincos_grid(pos.shape[1], pos.shape[-1]))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_grid(4, 6)


def test_conv_stems_replace_the_patch_convolutions_and_keep_the_grids(tmp_path):
    plain = preset("tiny")
    cfg = preset("tiny")
    cfg.vision.conv_stem, cfg.sam.conv_stem = [4, 8, 8], [4, 8, 8]  # both tiny encoders have patch 8
    model, reference = LasagnaModel(cfg), LasagnaModel(plain)
    clip = torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size)
    sam = torch.randn(2, 3, cfg.sam.image_size, cfg.sam.image_size)
    got, want = model.encode_images(clip, sam), reference.encode_images(clip, sam)
    assert got.llm_feats.shape == want.llm_feats.shape
    assert got.sam_embeds.shape == want.sam_embeds.shape
    keys = set(model.state_dict())
    assert "vision_tower.embeddings.patch_embedding.layers.4.weight" in keys  # 3 convolutions + 1x1 projection
    assert "sam.image_encoder.patch_embed.projection.layers.0.weight" in keys
    # the stem learns: a gradient reaches its first convolution
    model.encode_images(clip, sam).llm_feats.sum().backward()
    assert model.vision_tower.embeddings.patch_embedding.layers[0].weight.grad.abs().sum() > 0
    write_config(tmp_path, cfg)  # the stems travel with the checkpoint and load strictly
    loaded = build_from_state(read_config(tmp_path), model.state_dict(), "stem test")
    assert torch.equal(loaded.encode_images(clip, sam).sam_embeds, got.sam_embeds)
    cfg.sam.conv_stem = [4, 8]  # 2 convolutions shrink by 4, the patch is 8
    with pytest.raises(ValueError, match=r"sam.conv_stem \[4, 8\].*patch size 8"):
        LasagnaModel(cfg)


@pytest.mark.parametrize("drop_cls", [True, False])
def test_feature_pool_averages_patch_blocks_and_keeps_cls_alone(drop_cls):
    cfg = preset("tiny").vision  # 32 px, patch 8: a 4 x 4 grid
    cfg.drop_cls, cfg.feature_pool = drop_cls, 2
    grid = torch.arange(16.0).reshape(1, 16, 1)  # patch (r, c) holds 4r + c
    feats = grid if drop_cls else torch.cat([torch.full((1, 1, 1), -1.0), grid], dim=1)
    pooled = pool_features(feats, cfg)
    blocks = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]  # row-major 2 x 2 blocks
    want = torch.tensor([sum(b) / 4 for b in blocks]).reshape(1, 4, 1)
    assert pooled.shape[1] == cfg.num_features
    assert torch.equal(pooled, want if drop_cls else torch.cat([feats[:, :1], want], dim=1))
    full = preset("tiny")
    full.vision.feature_pool = 2
    model = LasagnaModel(full)
    clip, sam = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)
    assert model.encode_images(clip, sam).llm_feats.shape[:2] == (2, full.vision.num_features)
    with pytest.raises(ValueError, match="feature_pool 3 must be >= 1 and divide the 4-patch grid"):
        type(cfg)(image_size=32, patch_size=8, feature_pool=3)


def test_feature_pool_concat_sets_each_block_side_by_side_and_tiles_cls():
    cfg = preset("tiny").vision  # a 4 x 4 grid
    cfg.drop_cls, cfg.feature_pool, cfg.feature_pool_mode = False, 2, "concat"
    grid = torch.arange(16.0).reshape(1, 16, 1)  # patch (r, c) holds 4r + c
    feats = torch.cat([torch.full((1, 1, 1), -1.0), grid], dim=1)
    pooled = pool_features(feats, cfg)
    blocks = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]  # row-major 2 x 2 blocks, row-major inside
    assert torch.equal(pooled, torch.tensor([[[-1.0] * 4, *blocks]]))
    full = preset("tiny")
    full.vision.feature_pool, full.vision.feature_pool_mode = 2, "concat"
    model = LasagnaModel(full)
    feats = model.encode_images(torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)).llm_feats
    assert feats.shape == (2, full.vision.num_features, full.llm.hidden_size)
    with pytest.raises(ValueError, match="feature_pool_mode must be mean or concat, got 'max'"):
        type(cfg)(feature_pool_mode="max")


def test_image_positions_add_one_learned_vector_per_token_and_train_with_the_projector():
    cfg = preset("tiny")
    assert not any("image_positions" in k for k in LasagnaModel(cfg).state_dict())  # the released layout
    cfg.image_positions = True
    model = LasagnaModel(cfg, seed=0).eval()
    positions = model.state_dict()["image_positions"].clone()
    assert positions.shape == (cfg.vision.num_features, cfg.llm.hidden_size)
    clip, sam = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        placed = model.encode_images(clip, sam).llm_feats
        model.image_positions.zero_()
        plain = model.encode_images(clip, sam).llm_feats
    assert torch.allclose(placed - plain, positions.expand_as(placed), atol=1e-6)
    assert torch.cdist(positions, positions).fill_diagonal_(1.0).min() > 0  # every token its own vector
    for flag in (True, False):
        configure_trainable(model, TrainableConfig(lora_r=0, image_projector=flag))
        assert model.image_positions.requires_grad is flag


def test_image_grid_code_starts_as_nothing_and_trains_with_the_projector():
    cfg = preset("tiny")
    cfg.vision.drop_cls = False  # as shapeworld-small: CLS kept, first
    assert not any("image_grid" in k for k in LasagnaModel(cfg).state_dict())  # the released layout
    plain_model = LasagnaModel(cfg, seed=0).eval()
    cfg.image_grid_code = 8
    model = LasagnaModel(cfg, seed=0).eval()
    assert set(model.state_dict()) - set(plain_model.state_dict()) == {"image_grid.weight"}  # the code is not saved
    assert build_from_state(cfg, model.state_dict(), "test").image_grid is not None  # a meta build needs no buffer
    plain_state = plain_model.state_dict()
    assert all(torch.equal(plain_state[k], v) for k, v in model.state_dict().items() if k in plain_state)
    code = grid_code(cfg)
    assert code.shape == (cfg.vision.num_features, 8) and torch.equal(code[0], torch.zeros(8))  # CLS is nowhere
    assert torch.cdist(code[1:], code[1:]).fill_diagonal_(1.0).min() > 0  # every patch its own place
    slow_sin_x = code[1:, 1].reshape(cfg.vision.grid, cfg.vision.grid)  # (row, column): rises left to right only
    assert bool((slow_sin_x.diff(dim=1) > 0).all()) and bool((slow_sin_x.diff(dim=0) == 0).all())
    clip, sam = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.encode_images(clip, sam).llm_feats, plain_model.encode_images(clip, sam).llm_feats)
    configure_trainable(model, TrainableConfig(lora_r=0, image_projector=True))
    model.encode_images(clip, sam).llm_feats.square().sum().backward()
    assert model.image_grid.weight.grad.abs().sum() > 0  # zero weights still learn: the code is not zero
    configure_trainable(model, TrainableConfig(lora_r=0, image_projector=False))
    assert not model.image_grid.weight.requires_grad
    with pytest.raises(ValueError, match="image_grid_code must be 0 or a positive multiple of 4, got 6"):
        type(cfg)(image_grid_code=6)


def _skips_model(seed: int = 0) -> LasagnaModel:
    cfg = preset("tiny")
    cfg.sam.conv_stem, cfg.sam.stem_skips = [4, 8, 8], True
    torch.manual_seed(seed)
    return LasagnaModel(cfg)


def test_stem_skips_start_as_plain_sam_then_shape_masks_from_the_finer_maps():
    model = _skips_model().eval()
    sam = model.sam
    pixels = torch.randn(2, 3, sam.cfg.image_size, sam.cfg.image_size)
    prompts = torch.randn(3, sam.cfg.prompt_dim)
    with torch.no_grad():
        images = model.encode_images(torch.randn(2, 3, 32, 32), pixels)
        coarse, fine = images.sam_skips
        grid = sam.cfg.embedding_size
        assert coarse.shape == (2, 8, 2 * grid, 2 * grid) and fine.shape == (2, 4, 4 * grid, 4 * grid)
        # zero-initialised projections: the re-composed decoder gives SamMaskDecoder's own masks
        stem_skips, sam.stem_skips = sam.stem_skips, None
        plain = sam.decode(images.sam_embeds[1:], prompts)
        sam.stem_skips = stem_skips
        fused = sam.decode(images.sam_embeds[1:], prompts, images.skips_of(1))
        assert fused.shape == plain.shape == (3, 4 * grid, 4 * grid)
        torch.testing.assert_close(fused, plain)
        torch.nn.init.normal_(sam.stem_skips.fine.weight)
        assert not torch.allclose(sam.decode(images.sam_embeds[1:], prompts, images.skips_of(1)), plain)
    with pytest.raises(ValueError, match="needs the images' skip_maps"):
        sam.decode(images.sam_embeds[1:], prompts)


@pytest.mark.parametrize("skips", [False, True])
def test_prompts_of_many_images_decode_in_one_call_as_image_by_image(skips):
    model = (_skips_model() if skips else LasagnaModel(preset("tiny"))).eval()
    sam = model.sam
    if skips:  # why: zero-initialised, they would add nothing to compare
        torch.nn.init.normal_(sam.stem_skips.coarse.weight)
        torch.nn.init.normal_(sam.stem_skips.fine.weight)
    owner = torch.tensor([2, 0, 2, 1, 0])
    prompts = torch.randn(len(owner), sam.cfg.prompt_dim)
    sizes = [(sam.cfg.image_size, sam.cfg.image_size)] * 3
    with torch.no_grad():
        images = model.encode_images(torch.randn(3, 3, 32, 32), torch.randn(3, 3, *sizes[0]))
        batched = model.decode_masks(images, prompts, owner, sizes, [(20, 30), (16, 16), (8, 40)])
        for i, out in enumerate(batched):
            one = sam.decode(images.sam_embeds[i : i + 1], prompts[owner == i], images.skips_of(i))
            alone = sam.postprocess(one, sizes[i], out.shape[-2:])
            assert out.shape[0] == int((owner == i).sum())
            torch.testing.assert_close(out, alone, atol=1e-5, rtol=1e-4)
        none = model.decode_masks(images, prompts[:0], owner[:0], sizes, [(20, 30), (16, 16), (8, 40)])
        assert [tuple(m.shape) for m in none] == [(0, 20, 30), (0, 16, 16), (0, 8, 40)]


def test_the_decoder_gives_the_same_masks_with_the_kernel_it_trains_with_and_the_one_it_infers_with():
    """On CPU the mask decoder runs torch's math attention where gradients flow and the fused one without
    (`decoder_attention`); the two must draw the same masks."""
    model = _skips_model().eval()
    sam = model.sam
    torch.nn.init.normal_(sam.stem_skips.fine.weight)
    prompts = torch.randn(4, sam.cfg.prompt_dim)
    with torch.no_grad():
        images = model.encode_images(
            torch.randn(1, 3, 32, 32), torch.randn(1, 3, sam.cfg.image_size, sam.cfg.image_size)
        )
        inferred = sam.decode(images.sam_embeds, prompts, images.skips_of(0))
    trained = sam.decode(images.sam_embeds, prompts.requires_grad_(), images.skips_of(0))
    assert trained.requires_grad and not inferred.requires_grad
    torch.testing.assert_close(trained.detach(), inferred, atol=1e-5, rtol=1e-4)


def test_stem_skips_train_with_the_decoder_and_need_a_deep_enough_stem():
    model = _skips_model()
    model.set_token_ids(INS, 0)
    configure_trainable(model, TrainableConfig(lora_r=0))
    assert model.sam.stem_skips.fine.weight.requires_grad
    assert not model.sam.image_encoder.patch_embed.projection.layers[0].weight.requires_grad
    inputs = make_inputs([[1, IMG, 5, INS, 7, INS, 2]], [0], [(64, 64)])
    out = model(inputs)
    lasagna_loss(out.logits, out.labels, out.mask_logits, [torch.ones(2, 64, 64)]).total.backward()
    assert model.sam.stem_skips.coarse.weight.grad.abs().sum() > 0
    cfg = preset("tiny")
    cfg.sam.conv_stem, cfg.sam.stem_skips = [8, 8], True
    cfg.sam.patch_size = 4
    with pytest.raises(ValueError, match=r"stem_skips needs a conv_stem of at least 3.*\[8, 8\]"):
        LasagnaModel(cfg)


def test_name_spans_are_the_answer_tokens_since_the_previous_decision():
    from lasagna.judges.presence import name_spans

    answer = torch.tensor([False, False, True, True, True, True, True, True, True])
    decision = torch.tensor([False, False, False, False, True, True, False, True, False])
    assert name_spans(answer, decision) == [(2, 4), (5, 5), (6, 7)]


def test_frame_masks_puts_a_mask_where_postprocess_reads_it_back():
    sam = LasagnaModel(preset("tiny")).sam
    size = sam.cfg.image_size
    original, resized = (40, 60), (size * 2 // 3, size)  # a wide image: resized to the square's width, padded below
    mask = torch.zeros(1, *original, dtype=torch.bool)
    mask[0, 10:30, 5:25] = True
    low_size = (size // 4, size // 4)
    framed = sam.frame_masks(mask, resized, low_size)
    assert framed.shape == (1, *low_size) and framed.min() >= 0 and framed.max() <= 1
    assert not framed[0, low_size[0] * 2 // 3 + 1 :].any()  # the padding below the image holds nothing
    back = sam.postprocess((framed - 0.5) * 20, resized, original)[0] > 0
    assert (back & mask[0]).sum() / (back | mask[0]).sum() > 0.85
