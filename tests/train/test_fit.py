import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from helpers import TINY, failed_run, launch_deepspeed, run_two_processes
from lasagna.checkpoint import CheckpointError, load_pretrained, read_weights, save_pretrained
from lasagna.config import to_dict
from lasagna.losses import lasagna_loss, place_ce
from lasagna.model.build import TrainableConfig, configure_trainable
from lasagna.train import fit as fit_module
from lasagna.train.config import check_train_config, load_train_config
from lasagna.train.export import export_checkpoint
from lasagna.train.fit import fit
from lasagna.train.optim import param_groups
from lasagna.train.setup import build_model_and_tokenizer, build_training_set
from lasagna.train.state import load_training_state


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """accelerate keeps one state per process; each fit() here may ask for its own mixed precision."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()


def _cfg(out: Path, *extra: str):
    return load_train_config(None, [f"out_dir={out}", *TINY, *extra])


def _fit_on_one_batch(tmp_path: Path, images: int, loss_of) -> tuple[float, float]:
    """A tiny model trained 20 steps on one fixed batch -> (loss before, loss after); loss_of(model, batch)."""
    cfg = _cfg(tmp_path)
    torch.manual_seed(0)
    model, tokenizer = build_model_and_tokenizer(cfg)
    configure_trainable(model, TrainableConfig(lora_r=0, llm_full=True))
    dataset, collate = build_training_set(cfg, tokenizer, model.cfg)
    batch = collate([dataset[i] for i in range(images)])
    assert sum(len(m) for m in batch.gt_masks) > 0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    first = loss_of(model, batch).item()
    for _ in range(20):
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()
    return first, loss_of(model, batch).item()


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tmp_path):
    def loss_of(model, batch):
        out = model(batch)
        return lasagna_loss(out.logits, out.labels, out.mask_logits, batch.gt_masks, batch.ignore).total

    first, last = _fit_on_one_batch(tmp_path, 2, loss_of)
    assert last < 0.7 * first


def test_place_loss_trains_where_each_slot_points_and_is_logged(tmp_path):
    def loss_of(model, batch):
        out, vision = model(batch), model.cfg.vision
        grid, skip = vision.feature_grid, 1 - vision.drop_cls
        return place_ce(out.hidden, out.input_ids, model.ins_id, batch.image_index, batch.gt_masks, grid, skip)

    first, last = _fit_on_one_batch(tmp_path, 4, loss_of)
    assert last < 0.7 * first
    fit(_cfg(tmp_path / "run", "loss.place_weight=0.5", "optim.steps=2", "log_every=1"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 2 and all(r["place"] > 0 for r in steps)
    with pytest.raises(ValueError, match="image_grid_code"):  # named before anything is built or written
        fit(_cfg(tmp_path / "refused", "loss.place_weight=0.5", "loss.place_against=grid"))
    assert not (tmp_path / "refused").exists()
    grid = ["loss.place_weight=0.5", "loss.place_against=grid", "model_overrides={image_grid_code: 8}"]
    fit(_cfg(tmp_path / "grid", *grid, "optim.steps=1", "log_every=1"))
    first = json.loads((tmp_path / "grid" / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(first["place"] - math.log(16)) < 1e-3  # the map starts at zero: every cell alike, 4x4 tiny grid


def _base_model(tmp_path: Path) -> Path:
    """A tiny checkpoint of ours to fine-tune, as `lasagna convert official` writes for the 7B."""
    model, tokenizer = build_model_and_tokenizer(_cfg(tmp_path / "scratch"))
    return save_pretrained(model, tokenizer, tmp_path / "base")


# the 7B recipe's way: frozen weights in bf16, checkpoints of the trainable tensors alone, the rest from init_from
FINE_TUNE = ["checkpoint_weights=trainable", "frozen_dtype=bf16", "bf16=true"]
LR_SCALE = "optim.lr_scale={sam.mask_decoder: 0.1}"


@pytest.mark.parametrize("weights", ["full", "trainable"])
def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch, weights):
    extra = [f"init_from={_base_model(tmp_path)}", *FINE_TUNE, LR_SCALE] if weights == "trainable" else []
    full = tmp_path / "full"
    fit(_cfg(full, *extra))

    crashed = tmp_path / "crashed"
    real_save = fit_module.save_training_state

    def save_then_die(out, model, optimizer, scheduler, state, *args):
        path = real_save(out, model, optimizer, scheduler, state, *args)
        if state.step == 2:
            raise KeyboardInterrupt("simulated kill after the step-2 checkpoint")
        return path

    monkeypatch.setattr(fit_module, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(crashed, *extra))
    monkeypatch.setattr(fit_module, "save_training_state", real_save)
    assert [p.name for p in sorted((crashed / "checkpoints").iterdir())] == ["step-0000002"]
    fit(_cfg(crashed, *extra), resume=True)

    a = read_weights(full / "checkpoints" / "step-0000004")
    b = read_weights(crashed / "checkpoints" / "step-0000004")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


ZERO2_ON_CPU = """\
compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config: {zero_stage: 2, offload_optimizer_device: none, offload_param_device: none}
mixed_precision: bf16
num_machines: 1
num_processes: 1
"""


@pytest.mark.slow  # two launches; needs the `deepspeed` extra (`make test-slow` installs it)
def test_deepspeed_zero2_run_resumes_to_the_same_weights(tmp_path):
    """The 7B recipe's way (LoRA, trainable-only checkpoints, bf16) under DeepSpeed ZeRO-2, one CPU process: the
    state a run killed after its step-2 checkpoint leaves, resumed, ends where the whole run does, fp32 master
    weights included. (On CPU accelerate counts a DeepSpeed run as one process, so more cannot be tested here.)"""
    pytest.importorskip("deepspeed")
    launch = tmp_path / "zero2.yaml"
    launch.write_text(ZERO2_ON_CPU)
    args = [f"init_from={_base_model(tmp_path)}", *FINE_TUNE, "gradient_checkpointing=true"]
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    done = launch_deepspeed(launch, ["train", f"out_dir={full}", *TINY, *args])
    assert done.returncode == 0, failed_run(done)
    shutil.copytree(full, crashed)
    shutil.rmtree(crashed / "checkpoints" / "step-0000004")
    shutil.rmtree(crashed / "final")
    done = launch_deepspeed(launch, ["train", "--resume", f"out_dir={crashed}", *TINY, *args])
    assert done.returncode == 0, failed_run(done)

    a = read_weights(full / "checkpoints" / "step-0000004")
    b = read_weights(crashed / "checkpoints" / "step-0000004")
    assert a.keys() == b.keys() and any("lora_A" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    part = "optimizer-rank00000.pt"
    masters = [torch.load(run / "checkpoints" / "step-0000004" / part, weights_only=True) for run in (full, crashed)]
    groups = [m["single_partition_of_fp32_groups"] for m in masters]
    assert groups[0][0].dtype == torch.float32 and all(map(torch.equal, *groups))
    assert not (full / "checkpoints" / "step-0000004" / "optimizer.pt").exists()


@pytest.mark.slow  # needs the `deepspeed` extra
def test_deepspeed_zero2_trains_as_a_run_without_it(tmp_path):
    pytest.importorskip("deepspeed")
    launch = tmp_path / "zero2.yaml"
    launch.write_text(ZERO2_ON_CPU.replace("mixed_precision: bf16", "mixed_precision: 'no'"))
    done = launch_deepspeed(launch, ["train", f"out_dir={tmp_path / 'zero'}", *TINY])
    assert done.returncode == 0, failed_run(done)
    fit(_cfg(tmp_path / "plain"))
    zero, plain, start = (
        read_weights(tmp_path / run / "checkpoints" / step)
        for run, step in (("zero", "step-0000004"), ("plain", "step-0000004"), ("plain", "step-0000002"))
    )
    moved = max(float((plain[k] - start[k]).abs().max()) for k in plain)
    differ = max(float((plain[k] - zero[k]).abs().max()) for k in plain)
    assert differ < 1e-5 < 1e-4 < moved  # the last two steps moved the weights ten times more than the runs differ


def test_a_checkpoint_resumes_only_as_it_was_launched(tmp_path):
    cfg = _cfg(tmp_path / "run")
    model, _ = build_model_and_tokenizer(cfg)
    folder = tmp_path / "step-0000002"
    folder.mkdir()
    (folder / "optimizer-rank00000.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="saved under DeepSpeed ZeRO; it cannot be resumed without DeepSpeed"):
        load_training_state(folder, model, None, None, cfg, zero=False)
    (folder / "optimizer-rank00000.pt").unlink()
    with pytest.raises(ValueError, match="saved without DeepSpeed; it cannot be resumed under ZeRO"):
        load_training_state(folder, model, None, None, cfg, zero=True)


def test_export_merges_lora_and_round_trips(tmp_path):
    run = tmp_path / "lora"
    fit(_cfg(run, "optim.steps=2"))  # the default trainable config: LoRA on q_proj, v_proj
    assert any("lora_A" in k for k in read_weights(run / "checkpoints" / "step-0000002"))
    out = export_checkpoint(run, tmp_path / "exported", dtype="fp32")
    model, tokenizer = load_pretrained(out)
    assert not any("lora" in k for k in model.state_dict())

    cfg = load_train_config(run / "config.yaml")
    trained, _ = build_model_and_tokenizer(cfg, run)
    configure_trainable(trained, cfg.trainable)
    trained.load_state_dict(read_weights(run / "checkpoints" / "step-0000002"))
    trained.eval()
    dataset, collate = build_training_set(cfg, tokenizer, model.cfg)
    batch = collate([dataset[0]])
    with torch.no_grad():
        want, got = trained(batch), model(batch)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)
    for g, w in zip(got.mask_logits, want.mask_logits, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_trainable_only_checkpoints_hold_what_trains_and_export_from_init_from(tmp_path):
    base = _base_model(tmp_path)
    run = tmp_path / "lora"
    fit(_cfg(run, f"init_from={base}", *FINE_TUNE, "optim.steps=2", "eval.limit=1"))  # eval under autocast too
    assert any("eval" in line for line in (run / "metrics.jsonl").read_text().splitlines())
    saved = read_weights(run / "checkpoints" / "step-0000002")
    cfg = load_train_config(run / "config.yaml")
    model, _ = build_model_and_tokenizer(cfg, run)
    configure_trainable(model, cfg.trainable)
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(v.dtype == torch.float32 for v in saved.values())  # trainable tensors stay fp32

    exported, _ = load_pretrained(export_checkpoint(run, tmp_path / "exported", dtype="fp32"))
    weights, start = exported.state_dict(), read_weights(base)
    frozen = "vision_tower.encoder.layers.0.mlp.fc1.weight"
    assert torch.equal(weights[frozen], start[frozen])  # init_from's own, not the bf16 copy training ran on
    trained = "sam.mask_decoder.transformer.layers.0.self_attn.q_proj.weight"
    assert torch.equal(weights[trained], saved[trained]) and not torch.equal(weights[trained], start[trained])

    with pytest.raises(ValueError, match="lr_scale"):  # the optimizer's saved lrs would silently win
        fit(_cfg(run, f"init_from={base}", *FINE_TUNE, "optim.steps=3", LR_SCALE), resume=True)
    state = run / "checkpoints" / "step-0000002" / "state.json"
    info = json.loads(state.read_text())
    state.write_text(json.dumps({**info, "init_from": {**info["init_from"], "digest": "0" * 64}}))
    with pytest.raises(CheckpointError, match="only the trainable weights"):  # init_from changed since
        export_checkpoint(run, tmp_path / "again", dtype="fp32")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["frozen_dtype=bf16", "bf16=false"], "needs bf16: true"),
        (["checkpoint_weights=trainable"], "needs init_from"),
        (["checkpoint_weights=trainable", "init_from=x", "encoders.steps=10"], "stage 0/0b"),
        (["checkpoint_weights=trainable", "init_from=x", "decoder.from_file=d.safetensors"], "stage 0/0b"),
        (["optim.lr_scale.sam.mask_decoder=0.1"], "positive number"),  # a nested mapping, not {prefix: scale}
        (["data.dataset=mixed", "data.refer_no_target_rate=0.3"], "ShapeWorld only"),
        (["data.refer_no_target_rate=1.5"], r"in \[0, 1\]"),
        (["data.dataset=mixed", "data.refer_twins=true"], "ShapeWorld only"),
        (["data.refer_twins=true"], "would split twins"),
        (["data.dataset=mixed", "loss.place_weight=0.1"], "ShapeWorld only"),
        (["data.sources.folder=fruit"], r"data.sources.folder must be a mapping of reader options"),
        (["data.sources.folder.root=5"], r"data.sources.folder.root must be a path, got 5"),
        (["trainable.lora_r=-1"], r"trainable.lora_r must be an integer >= 0 \(0 = no LoRA\), got -1"),
        (["trainable.lora_alpha=0"], r"trainable.lora_alpha must be a finite number > 0"),
        (["trainable.lora_dropout=1.5"], r"trainable.lora_dropout must be in \[0, 1\)"),
    ],
)
def test_train_config_combinations_that_cannot_work_are_named(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        check_train_config(_cfg(tmp_path, *overrides))


def test_lr_scale_gives_named_parameters_their_own_lr(tiny_model):
    configure_trainable(tiny_model, TrainableConfig(lora_r=0, llm_full=True))
    groups = param_groups(tiny_model, 1e-3, {"sam.mask_decoder": 0.1, "sam.mask_decoder.transformer": 0.5})
    lrs = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(tiny_model.named_parameters())
    assert groups[0]["lr"] == 1e-3 and len(lrs) == sum(p.requires_grad for p in named.values())
    assert lrs[id(named["sam.mask_decoder.iou_token.weight"])] == pytest.approx(1e-4)
    assert lrs[id(named["sam.mask_decoder.transformer.layers.0.self_attn.q_proj.weight"])] == pytest.approx(5e-4)
    assert lrs[id(named["text_projector.0.weight"])] == 1e-3
    with pytest.raises(ValueError, match=r"\['sam.mask'\]"):
        param_groups(tiny_model, 1e-3, {"sam.mask": 0.1})  # a prefix is whole name parts, not characters


@pytest.mark.parametrize("verifier", [False, True])
def test_two_processes_keep_identical_weights(tmp_path, verifier):
    out = tmp_path / "ddp"
    extra = ["judges.add.presence_verifier=true", "calibrate_scenes=2"] if verifier else []
    done = run_two_processes(["train", f"out_dir={out}", *TINY, "optim.steps=2", *extra])
    assert done.returncode == 0, failed_run(done)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    sums = next(r["rank_checksums"] for r in records if "rank_checksums" in r)
    assert len(sums) == 2 and sums[0] == sums[1]  # with a verifier: each rank calibrated it alike
    assert any("calibration" in r for r in records) == verifier


def test_whole_names_tokenizer_keeps_training_class_names_whole(tmp_path):
    _, tokenizer = build_model_and_tokenizer(_cfg(tmp_path, "tokenizer_whole_names=true", "tokenizer_corpus=200"))
    assert tokenizer.tokenize("red circle, sky") == ["▁red▁circle", ",", "▁sky"]
    assert tokenizer.tokenize("red square") == ["▁red", "▁square"]  # held out: never one piece


def test_ablation_rows_differ_only_in_their_semantic_task_and_out_dir():
    rows = sorted(Path("configs/ablation").glob("*.yaml"))
    assert [p.stem for p in rows] == ["a-lisa", "b-complex", "c-negatives", "d-random-list", "e-order"]
    configs = [to_dict(load_train_config(p)) for p in rows]
    for cfg in configs:
        cfg["data"]["mixture"]["tasks"].pop("semantic")
        cfg.pop("out_dir")
    assert all(cfg == configs[0] for cfg in configs[1:])


@pytest.mark.slow  # compiling takes about 2 minutes on 2 cores with an empty inductor cache
def test_compiled_steps_match_eager_ones_and_leave_checkpoints_alike(tmp_path):
    logs = {}
    for mode in ("eager", "compiled"):
        extra = ["compile=true"] if mode == "compiled" else []
        fit(_cfg(tmp_path / mode, "optim.steps=2", "log_every=1", "eval.limit=2", *extra))
        lines = (tmp_path / mode / "metrics.jsonl").read_text().splitlines()
        logs[mode] = [json.loads(line) for line in lines]
    eager, compiled = ([r for r in logs[m] if "loss" in r] for m in ("eager", "compiled"))
    for a, b in zip(eager, compiled, strict=True):  # same data, same start: the same losses but for rounding
        for part in ("ce", "bce", "dice"):
            assert b[part] == pytest.approx(a[part], rel=1e-4, abs=1e-6), (a["step"], part)
    assert any("eval" in r for r in logs["compiled"])  # the final evaluation ran (eager, under the compiled model)
    a = read_weights(tmp_path / "eager" / "checkpoints" / "step-0000002")
    b = read_weights(tmp_path / "compiled" / "checkpoints" / "step-0000002")
    assert a.keys() == b.keys()  # in-place compilation renames nothing
    load_pretrained(tmp_path / "compiled" / "final")


def test_launch_configs_that_would_override_the_training_config_are_refused(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from lasagna.train.optim import check_accumulation

    cfg = _cfg(tmp_path)  # batch 2, accumulation 2, clipping 1.0
    ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_clipping": 1.0, "zero_optimization": {"stage": 2}}
    plugin = SimpleNamespace(deepspeed_config=ds)
    accelerator = SimpleNamespace(gradient_accumulation_steps=2, state=SimpleNamespace(deepspeed_plugin=plugin))
    check_accumulation(accelerator, cfg)
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["gradient_accumulation_steps"] == 2  # `auto`s filled in
    ds["gradient_accumulation_steps"] = 1  # the value a launch config once gave: DeepSpeed would step every micro-batch
    with pytest.raises(ValueError, match="gradient_accumulation_steps 1 where the training config has 2"):
        check_accumulation(accelerator, cfg)

    # `accelerate launch` passes a launch config's accumulation to accelerate through this variable
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "3")
    with pytest.raises(ValueError, match="gradient_accumulation_steps 3 where the training config has 2"):
        fit(_cfg(tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()


def test_model_overrides_apply_to_init_from_and_a_verifier_added_by_the_run_trains_then_is_calibrated(tmp_path):
    base = _base_model(tmp_path)
    run = tmp_path / "run"
    args = ["judges.add.presence_verifier=true", "optim.steps=2", "log_every=1", "calibrate_scenes=3"]
    fit(_cfg(run, f"init_from={base}", *args))
    assert json.loads((run / "final" / "config.json").read_text())["judges"]["presence_verifier"] is True
    weights = read_weights(run / "final")
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["presence"] > 0 for r in logged if "loss" in r)
    (report,) = [r["calibration"] for r in logged if "calibration" in r]
    assert report["scenes"] == 3 and report["classes"] > 0
    fusion = weights["verifier.fusion.weight"].float()
    assert fusion[0].tolist() == pytest.approx([report["weight_llm"], report["weight_verifier"]], rel=1e-2)
    with pytest.raises(Exception, match="llm"):  # an override that changes weights fails the strict load by name
        build_model_and_tokenizer(
            _cfg(tmp_path / "bad", f"init_from={base}", "model_overrides={llm.num_hidden_layers: 3}")
        )


def test_a_query_verifier_added_by_the_run_trains_alone(tmp_path):
    base = _base_model(tmp_path)
    run = tmp_path / "run"
    # calibrate_scenes=0: calibrating its fusion free-decodes 200 scenes (over the 300 s timeout on 2 loaded cores)
    args = ["judges.add.query_verifier=true", "optim.steps=2", "log_every=1", "calibrate_scenes=0"]
    frozen = ["trainable.lora_r=0", "trainable.embeddings=false", "trainable.mask_decoder=false"]
    fit(_cfg(run, f"init_from={base}", *args, *frozen, "trainable.text_projector=false"))
    weights, before = read_weights(run / "final"), read_weights(base)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["query"] > 0 and "presence" not in r for r in logged if "loss" in r)
    assert set(weights) - set(before) == {k for k in weights if k.startswith("query_verifier.")}
    assert all(torch.equal(before[k].to(weights[k].dtype), weights[k]) for k in before)  # it trained alone


def test_calibrate_refits_the_fusion_into_a_new_folder_and_refuses_a_model_without_a_verifier(tmp_path, capsys):
    from lasagna.cli import main

    base = _base_model(tmp_path)
    assert main(["calibrate", "--model", str(base), "--out", str(tmp_path / "x"), "--limit", "2"]) == 2
    assert "no presence verifier and no query verifier" in capsys.readouterr().err and not (tmp_path / "x").exists()
    from lasagna.config import JudgesConfig
    from lasagna.judges import Judges

    model, tokenizer = load_pretrained(base)
    judges = Judges.for_model(model, JudgesConfig(presence_verifier=True), seed=0)
    with_verifier = save_pretrained(model, tokenizer, tmp_path / "verified", judges=judges)
    out = tmp_path / "calibrated"
    assert main(["calibrate", "--model", str(with_verifier), "--out", str(out), "--limit", "2"]) == 0
    report = json.loads(capsys.readouterr().out.rsplit("wrote", 1)[0])["presence"]
    weights = read_weights(out)
    assert weights["verifier.fusion.weight"][0].tolist() == pytest.approx(
        [report["weight_llm"], report["weight_verifier"]], rel=1e-5
    )
    assert report["weight_llm"] != 1.0  # moved from the untrained fusion (LLM alone)
    before = read_weights(with_verifier)
    assert all(torch.equal(before[k], weights[k]) for k in before if not k.startswith("verifier.fusion."))
    weighed = ["calibrate", "--model", str(with_verifier), "--out", str(tmp_path / "weighed"), "--limit", "2"]
    assert main([*weighed, "--absent-weight", "4"]) == 0  # a false alarm costs four misses: the bias falls
    more = json.loads(capsys.readouterr().out.rsplit("wrote", 1)[0])["presence"]
    assert more["absent_weight"] == 4.0 and more["bias"] < report["bias"]
