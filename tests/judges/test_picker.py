import json

import pytest
import torch

from helpers import add_judges, decisive_model
from lasagna.api import Lasagna
from lasagna.checkpoint import read_weights, save_pretrained
from lasagna.judges.answers import Answers
from lasagna.judges.picker import CUT, MAX_PIECES, InstancePicker, label_pieces
from lasagna.judges.picking import picker_report, pieces_of, train_picker
from lasagna.shapeworld import ShapeWorldReferring
from lasagna.tokens import token_ids


def test_pieces_are_8_connected_and_numbered_from_the_largest_and_those_beyond_the_cap_are_left_alone():
    masks = torch.zeros(2, 12, 12, dtype=torch.bool)
    masks[0, 0:2, 0:2] = True  # 4 cells
    masks[0, 2, 2] = True  # touches the first at a corner: the same piece
    masks[0, 5:8, 5:8] = True  # 9 cells: the largest
    masks[0, 11, 0] = True  # 1 cell
    pieces = label_pieces(masks)
    assert torch.equal(pieces[0] > 0, masks[0]) and not pieces[1].any()
    assert (pieces[0] == 1).sum() == 9 and (pieces[0] == 2).sum() == 5 and (pieces[0] == 3).sum() == 1

    dots = torch.zeros(1, 12, 12, dtype=torch.bool)
    dots[0, ::2, ::2] = True  # 36 pieces of one cell
    dots[0, 0, 1] = True  # joins the first two: 3 cells, the largest
    pieces = label_pieces(dots)
    assert pieces.max() == MAX_PIECES and (pieces[0] == 1).sum() == 3 and (pieces > 0).sum() == MAX_PIECES + 2


def _two_piece_answers(n=160, seed=0, dim=8):
    """Decisions whose mask covers two blobs, one left and one right; the word says which is meant: 1 the left, 2 the
    right, 3 both. Blob sizes and heights vary, so only the word and the pieces' places tell."""
    g = torch.Generator().manual_seed(seed)
    word = torch.randint(1, 4, (n,), generator=g)
    low = torch.full((n, 16, 16), -8.0)
    targets = torch.zeros(n, 16, 16)
    for i in range(n):
        rows = [int(r) for r in torch.randint(0, 12, (2,), generator=g)]
        sizes = [int(s) for s in torch.randint(2, 5, (2,), generator=g)]
        left = (slice(rows[0], rows[0] + sizes[0]), slice(1, 1 + sizes[0]))
        right = (slice(rows[1], rows[1] + sizes[1]), slice(10, 10 + sizes[1]))
        low[i][left] = 8.0
        low[i][right] = 8.0
        for side, box in ((1, left), (2, right)):
            if word[i] in (side, 3):
                targets[i][box] = 1.0
    return Answers(
        embeds=torch.randn(4, dim, 4, 4, generator=g).half(),
        scene=torch.randint(0, 4, (n,), generator=g),
        low_res=low.half(),
        names=[torch.tensor([int(w)]) for w in word],
        llm=torch.zeros(n),
        present=torch.ones(n, dtype=torch.bool),
        targets=targets.half(),
    )


def test_an_untrained_picker_keeps_every_piece():
    answers = _two_piece_answers(n=8)
    embed = torch.nn.Embedding(4, 8)
    report = picker_report(InstancePicker(8, 8, width=32, layers=1, heads=2), answers, embed)
    assert report["decisions"] == 8 and report["ciou_after"] == report["ciou_before"] < 1


def test_a_picker_trained_on_answers_keeps_the_pieces_its_word_means():
    torch.manual_seed(0)
    answers = _two_piece_answers()
    embed = torch.nn.Embedding(4, 8).requires_grad_(False)
    picker = InstancePicker(8, 8, width=32, layers=1, heads=2).to(torch.bfloat16)
    losses, used = train_picker(picker, answers, embed, epochs=30, batch_size=16, lr=3e-3, progress=False)
    assert used == len(answers) and losses[-1] < losses[0] / 4
    assert next(picker.parameters()).dtype == torch.float32 and not picker.training
    report = picker_report(picker, _two_piece_answers(seed=1), embed)
    assert report["picked_right"] > 0.95 and report["ciou_after"] > 0.95 > 0.7 > report["ciou_before"]

    absent = _two_piece_answers(n=8)
    absent.present[:] = False  # no target: nothing to learn which piece is meant from
    with pytest.raises(ValueError, match="nothing to pick between"):
        train_picker(picker, absent, embed, epochs=1, progress=False)
    absent.targets = None
    with pytest.raises(ValueError, match="no targets"):
        pieces_of(absent, picker)


def _lasagna(tokenizer):
    model = decisive_model(tokenizer, 3)
    ids = token_ids(tokenizer)
    model.set_token_ids(ids.ins, ids.pad, ids.no_ins)
    return Lasagna(model, tokenizer)


def test_a_query_mask_goes_through_the_picker_and_a_class_list_mask_does_not(tiny_tokenizer, monkeypatch):
    lasagna = _lasagna(tiny_tokenizer)
    record = ShapeWorldReferring("val")[0]
    image = record.load_image()
    plain = [lasagna.segment(image, query=e.text) for e in record.expressions]
    assert any(p.masks for p in plain)
    add_judges(lasagna, instance_picker=True)
    seen = []

    def cut_everything(embeds, low_res, words, valid):
        seen.append(len(low_res))
        return torch.full_like(low_res, CUT)

    monkeypatch.setattr(lasagna.judges.instance_picker, "pick", cut_everything)
    picked = [lasagna.segment(image, query=e.text) for e in record.expressions]
    assert seen and sum(seen) == sum(len(p.masks) for p in plain)
    assert [p.scores for p in picked] == [p.scores for p in plain]  # it decides nothing, it only cuts
    assert all(not m.any() for p in picked for m in p.masks)
    seen.clear()
    lasagna.segment(image, classes=["red circle", "sky"])
    assert not seen


def test_train_picker_writes_a_model_whose_only_new_tensors_are_its_trained_picker(
    tiny_tokenizer, tmp_path, capsys, monkeypatch
):
    from lasagna.cli import main
    from lasagna.judges import answers as answers_module

    model = _lasagna(tiny_tokenizer).engine.model
    base = save_pretrained(model, tiny_tokenizer, tmp_path / "base")
    shapes = dict(dim=model.cfg.sam.prompt_dim)
    collected = []

    def synthetic(lasagna, source, count, **kw):  # the untrained model's masks seldom fall in pieces
        collected.append((source.name, count))
        answers = _two_piece_answers(n=48 if "/train/" in source.name else 16, **shapes)
        grid = lasagna.engine.encode_image(source[0].load_image())[0].sam_embeds.shape[-2:]
        answers.embeds = torch.randn(4, shapes["dim"], *grid).half()
        return answers

    monkeypatch.setattr(answers_module, "collect_answers", synthetic)
    out = tmp_path / "picked"
    args = ["train-picker", "--model", str(base), "--out", str(out), "--scenes", "3", "--epochs", "2"]
    args += ["--max-new-tokens", "24"]  # a random LLM's answers, cut short
    assert main([*args, "--check-limit", "4"]) == 0
    printed = json.loads(capsys.readouterr().out.rsplit("wrote", 1)[0])
    assert collected == [("shapeworld/train/referring", 3), ("shapeworld/val/referring", 4)]
    assert printed["train"]["decisions"] == 48 and len(printed["train"]["losses"]) == 2
    collected.clear()
    both = [*args[:4], str(tmp_path / "both"), *args[5:], "--check-limit", "4", "--reasoning-dataset", "shapeworld"]
    assert main(both) == 0  # a dataset for the reasoning queries is enough to ask for them
    assert [c[0] for c in collected] == [  # the reasoning queries of the same scenes too
        "shapeworld/train/referring",
        "shapeworld/train/reasoning",
        "shapeworld/val/referring",
    ]
    assert json.loads(capsys.readouterr().out.rsplit("wrote", 1)[0])["train"]["decisions"] == 96
    assert printed["check"]["decisions"] == 16
    judges = Lasagna.from_pretrained(out).judges
    assert judges.instance_picker is not None and judges.cfg.instance_picker
    before, after = read_weights(base), read_weights(out)
    assert set(after) - set(before) == {k for k in after if k.startswith("instance_picker.")}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert main(args) == 2 and "exists" in capsys.readouterr().err


def test_reasoning_queries_are_asked_as_evaluation_asks_them_with_the_record_target():
    from lasagna.judges.answers import ReasoningQueries
    from lasagna.prompts import reasoning_question
    from lasagna.shapeworld import ShapeWorldReasoning

    source = ShapeWorldReasoning("val", length=2)
    queries = ReasoningQueries(source)
    assert len(queries) == 2 and queries.name == source.name
    record, asked = source[1], queries[1]
    assert [e.text for e in asked.expressions] == [reasoning_question(q, record.is_sentence) for q in record.queries]
    masks = asked.expressions[0].load_masks()
    assert masks.shape == (1, *record.load_mask().shape) and (masks[0] == (record.load_mask() == 1)).all()


def test_a_weak_piece_the_picker_keeps_shows_in_the_mask_and_a_cut_one_does_not(monkeypatch):
    from lasagna.judges.picker import CANDIDATE

    low = torch.full((1, 12, 12), -8.0)
    low[0, 1:4, 1:4] = 3.0  # drawn
    low[0, 7:10, 7:10] = CANDIDATE / 2  # drawn weakly: under 0, above CANDIDATE
    low[0, 1:3, 8:10] = CANDIDATE * 2  # under CANDIDATE: no candidate
    picker = InstancePicker(8, 8, width=32, layers=1, heads=2)
    monkeypatch.setattr(picker, "score", lambda *a: torch.tensor([[-1.0, 2.0, *[float("-inf")] * (MAX_PIECES - 2)]]))
    picked = picker.pick(torch.randn(1, 8, 4, 4), low, torch.randn(1, 1, 8), torch.ones(1, 1, dtype=torch.bool))
    assert (picked[0, 1:4, 1:4] == CUT).all()  # the drawn piece, scored below 0, is cut
    assert (picked[0, 7:10, 7:10] > 0).all()  # the weak one, kept, now shows
    assert torch.equal(picked[0, 1:3, 8:10], low[0, 1:3, 8:10])  # the rest is left as it was


def test_the_candidate_level_travels_with_the_picker_and_decides_its_pieces(tmp_path):
    low = torch.full((1, 12, 12), -8.0)
    low[0, 1:4, 1:4] = 3.0
    low[0, 7:10, 7:10] = -3.0  # a piece at a level of -4, none at the default
    assert int(InstancePicker(8, 8).pieces(low).max()) == 1
    picker = InstancePicker(8, 8, width=32, layers=1, heads=2, candidate=-4.0)
    assert int(picker.pieces(low).max()) == 2
    picked = picker.pick(torch.randn(1, 8, 4, 4), low, torch.randn(1, 1, 8), torch.ones(1, 1, dtype=torch.bool))
    assert (picked[0, 7:10, 7:10] == 1.0).all()  # kept (untrained) and raised by its own level, not the default's
    state = picker.state_dict()
    assert float(state["candidate"]) == -4.0  # a checkpoint records it
    fresh = InstancePicker(8, 8, width=32, layers=1, heads=2)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.pieces(low), picker.pieces(low))
