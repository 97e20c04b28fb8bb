import json

import pytest
import torch

from helpers import add_judges, decisive_model
from lasagna.api import Lasagna
from lasagna.checkpoint import read_weights, save_pretrained
from lasagna.infer.engine import name_ids
from lasagna.judges.answers import Answers, auc, collect_answers, judge_answers, train_on_answers
from lasagna.judges.query import QueryVerifier
from lasagna.shapeworld import ShapeWorldReferring
from lasagna.tokens import token_ids


def _lasagna(tokenizer, seed=3):
    model = decisive_model(tokenizer, seed)
    ids = token_ids(tokenizer)
    model.set_token_ids(ids.ins, ids.pad, ids.no_ins)
    return Lasagna(model, tokenizer)


TOKENS = 24  # answers cut short: the comparison holds at any length, and a random LLM rambles


def test_answers_hold_each_decision_as_a_query_gets_it_with_each_image_encoded_once(tiny_tokenizer, monkeypatch):
    lasagna = _lasagna(tiny_tokenizer)
    source = ShapeWorldReferring("val")
    encode = lasagna.engine.encode_image
    encoded = []
    monkeypatch.setattr(lasagna.engine, "encode_image", lambda image: encoded.append(1) or encode(image))
    answers = collect_answers(lasagna, source, 3, max_new_tokens=TOKENS, progress=False)
    assert len(encoded) == 3

    scores, present, scenes, names = [], [], [], []
    for index in range(3):
        record = source[index]
        for expr in record.expressions:
            pred = lasagna.engine.segment_query(record.load_image(), expr.text, TOKENS)  # one encoding per query
            names += name_ids(lasagna.engine.answer_query(encode(record.load_image())[0], expr.text, TOKENS))
            scores += pred.scores
            present += [len(expr.load_masks()) > 0] * len(pred.scores)
            scenes += [index] * len(pred.scores)
    assert len(answers) == len(scores) > 0 and set(present) == {True, False}
    assert torch.sigmoid(answers.llm).tolist() == pytest.approx(scores, abs=1e-5)
    assert answers.present.tolist() == present
    assert len(answers.embeds) == len(set(scenes))  # a scene whose answers hold no decision keeps no embedding
    rank = {s: i for i, s in enumerate(sorted(set(scenes)))}
    assert answers.scene.tolist() == [rank[s] for s in scenes]
    last = max(scenes)
    expected = lasagna.engine.encode_image(source[last].load_image())[0].sam_embeds[0].half()
    assert torch.equal(answers.embeds[rank[last]], expected)
    assert answers.low_res.dtype == answers.embeds.dtype == torch.float16
    assert [n.tolist() for n in answers.names] == names
    assert answers.targets.shape == answers.low_res.shape and answers.targets.dtype == torch.float16
    assert [bool(t.any()) for t in answers.targets] == present  # each decision holds its expression's targets
    with pytest.raises(ValueError, match="at least one scene"):
        collect_answers(lasagna, source, 0, progress=False)


def _sided_answers(n=96, seed=0):
    """Answers a verifier can judge only by comparing word and place: word 1 says "left", word 2 "right", and a
    decision has a target when its mask lies on the side its word says."""
    g = torch.Generator().manual_seed(seed)
    word = torch.randint(1, 3, (n,), generator=g)
    side = torch.randint(0, 2, (n,), generator=g)  # 0 left, 1 right
    low = torch.full((n, 8, 8), -8.0)
    for i in range(n):
        columns = slice(0, 3) if side[i] == 0 else slice(5, 8)
        low[i, 2:6, columns] = 8.0
    return Answers(
        embeds=torch.randn(4, 8, 4, 4, generator=g).half(),
        scene=torch.randint(0, 4, (n,), generator=g),
        low_res=low.half(),
        names=[torch.tensor([int(w)]) for w in word],
        llm=torch.zeros(n),
        present=(word - 1) == side,
    )


def test_a_verifier_trained_on_answers_learns_a_rule_that_compares_its_word_with_the_mask_place():
    torch.manual_seed(0)
    answers = _sided_answers()
    embed = torch.nn.Embedding(3, 8).requires_grad_(False)
    before = embed.weight.clone()
    verifier = QueryVerifier(8, 8, width=32, layers=1, heads=2).to(torch.bfloat16)
    untrained = auc(judge_answers(verifier, answers, embed), answers.present)
    losses = train_on_answers(verifier, answers, embed, epochs=40, batch_size=16, lr=3e-3, progress=False)
    assert next(verifier.parameters()).dtype == torch.float32 and not verifier.training
    assert losses[-1] < losses[0] and torch.equal(embed.weight, before)
    held_out = _sided_answers(seed=1)
    assert auc(judge_answers(verifier, held_out, embed), held_out.present) > max(0.95, untrained)
    one_sided = _sided_answers()
    one_sided.present[:] = True
    with pytest.raises(ValueError, match="both with and without a target"):
        train_on_answers(verifier, one_sided, embed, epochs=1, progress=False)


def test_query_calibration_fits_each_decision_against_whether_its_expression_has_a_target(tiny_tokenizer, monkeypatch):
    from lasagna.judges import answers as answers_module
    from lasagna.judges.calibrate import calibrate_queries

    lasagna = _lasagna(tiny_tokenizer)
    add_judges(lasagna, query_verifier=True)
    held_out = _sided_answers()
    collected = []
    monkeypatch.setattr(
        answers_module, "collect_answers", lambda *a, **k: collected.append(a[2]) or held_out
    )  # the LLM says present everywhere; the verifier knows
    monkeypatch.setattr(answers_module, "judge_answers", lambda *a, **k: held_out.present.float() * 6 - 3)
    held_out.llm[:] = 2.0
    report = calibrate_queries(lasagna, ShapeWorldReferring("val"), 4, progress=False)
    assert collected == [4] and report["decisions"] == len(held_out) and report["scenes"] == 4
    assert report["present_recall"] == report["absent_rejection"] == 1.0
    assert report["weight_verifier"] > 0 and report["auc_verifier"] == 1.0 and report["auc_llm"] == 0.5
    fusion = lasagna.judges.query_verifier.fusion.weight[0].tolist()
    assert fusion == pytest.approx([report["weight_llm"], report["weight_verifier"]])


def test_train_verifier_writes_a_model_whose_only_new_tensors_are_its_trained_query_verifier(
    tiny_tokenizer, tmp_path, capsys
):
    from lasagna.cli import main

    base = save_pretrained(_lasagna(tiny_tokenizer).model, tiny_tokenizer, tmp_path / "base")
    out = tmp_path / "verified"
    args = ["train-verifier", "--model", str(base), "--out", str(out), "--scenes", "3", "--epochs", "2"]
    args += ["--max-new-tokens", str(TOKENS)]
    assert main([*args, "--no-target-rate", "0.5", "--calibrate-limit", "4"]) == 0
    printed = json.loads(capsys.readouterr().out.rsplit("wrote", 1)[0])
    assert len(printed["train"]["losses"]) == 2 and printed["calibration"]["scenes"] == 4
    judges = Lasagna.from_pretrained(out).judges
    assert judges.query_verifier is not None and judges.cfg.query_verifier
    before, after = read_weights(base), read_weights(out)
    assert set(after) - set(before) == {k for k in after if k.startswith("query_verifier.")}
    assert all(torch.equal(before[k], after[k]) for k in before)
    fusion = after["query_verifier.fusion.weight"][0].float().tolist()
    calibration = printed["calibration"]
    assert fusion == pytest.approx([calibration["weight_llm"], calibration["weight_verifier"]], rel=1e-2)

    assert main(args) == 2  # the folder exists: refused before any work
    assert "exists" in capsys.readouterr().err
    assert (
        main(["train-verifier", "--model", str(base), "--out", str(tmp_path / "x"), "--dataset", "refcoco", "--twins"])
        == 2
    )
    assert "ShapeWorld only" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_answers_saved_and_read_back_are_the_same_and_other_answers_are_refused(tmp_path):
    from lasagna.judges.answers import load_answers, save_answers

    answers = _sided_answers(n=12)
    answers.names[3] = torch.zeros(0, dtype=torch.long)  # a decision right after another names nothing
    about = {"model": "/m", "scenes": 12, "twins": False}
    path = save_answers(answers, tmp_path / "answers.safetensors", about)
    back = load_answers(path, about)
    for field in ("embeds", "scene", "low_res", "llm", "present"):
        assert torch.equal(getattr(back, field), getattr(answers, field))
    assert back.targets is None  # answers written without targets read back without them
    answers.targets = (answers.low_res > 0).half()
    assert torch.equal(load_answers(save_answers(answers, path, about), about).targets, answers.targets)
    assert [n.tolist() for n in back.names] == [n.tolist() for n in answers.names]
    with pytest.raises(ValueError, match=r"scenes: 12 there, 40 asked"):
        load_answers(path, {**about, "scenes": 40})
    (tmp_path / "junk").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="not an answers file"):
        load_answers(tmp_path / "junk", about)


def test_train_verifier_keeps_its_answers_and_trains_the_same_from_them(tiny_tokenizer, tmp_path, capsys, monkeypatch):
    from lasagna.cli import main
    from lasagna.judges import answers as answers_module

    base = save_pretrained(_lasagna(tiny_tokenizer).model, tiny_tokenizer, tmp_path / "base")
    kept = tmp_path / "answers.safetensors"
    args = ["train-verifier", "--model", str(base), "--scenes", "3", "--epochs", "2", "--calibrate-limit", "4"]
    args += ["--no-target-rate", "0.5", "--answers", str(kept), "--max-new-tokens", str(TOKENS)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0 and kept.exists()
    first = json.loads(capsys.readouterr().out.rsplit("wrote", 1)[0])["train"]

    def no_decoding(lasagna, source, count, **kw):
        if source.split == "train":
            raise AssertionError("the kept answers should have been read")
        return collect(lasagna, source, count, **kw)

    collect = answers_module.collect_answers
    monkeypatch.setattr(answers_module, "collect_answers", no_decoding)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    again = json.loads(capsys.readouterr().out.rsplit("wrote", 1)[0])["train"]
    assert again["decisions"] == first["decisions"] and again["losses"] == first["losses"]
    assert torch.equal(
        read_weights(tmp_path / "a")["query_verifier.head.1.weight"],
        read_weights(tmp_path / "b")["query_verifier.head.1.weight"],
    )
    assert main([*args[:4], "4", *args[5:], "--out", str(tmp_path / "c")]) == 2  # 4 scenes asked, 3 kept
    assert "scenes: 3 there, 4 asked" in capsys.readouterr().err and not (tmp_path / "c").exists()
    on_top = [*args[:2], str(tmp_path / "a"), *args[3:], "--fresh", "--out", str(tmp_path / "d")]
    assert main(on_top) == 0  # the model with its verifier answers as the one it was added to: the file is read
    capsys.readouterr()
    assert main([*on_top[:-1], str(tmp_path / "e"), "--reasoning-answers", str(tmp_path / "r")]) == 2
    assert "ask for them with --reasoning" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_the_answering_digest_is_the_models_and_not_its_judges(tiny_tokenizer, tmp_path):
    from lasagna.judges.answers import answering_digest

    lasagna = _lasagna(tiny_tokenizer)
    before = answering_digest(lasagna.model)
    add_judges(lasagna, query_verifier=True, instance_picker=True)
    folder = save_pretrained(lasagna.model, tiny_tokenizer, tmp_path / "judged", judges=lasagna.judges)
    assert answering_digest(Lasagna.from_pretrained(folder).model) == before
    with torch.no_grad():
        next(lasagna.model.projector.parameters()).view(-1)[0] += 1
    assert answering_digest(lasagna.model) != before


def test_joined_answers_keep_each_decision_on_its_own_scene():
    from lasagna.judges.answers import join_answers

    first, second = _sided_answers(n=6), _sided_answers(n=4, seed=1)
    joined = join_answers(first, second)
    assert len(joined) == 10 and len(joined.embeds) == 8
    assert torch.equal(joined.embeds[joined.scene[6:]], second.embeds[second.scene])
    assert torch.equal(joined.low_res[:6], first.low_res) and joined.names[6:] == second.names
    second.targets = second.low_res > 0
    with pytest.raises(ValueError, match="with targets and answers without"):
        join_answers(first, second)
