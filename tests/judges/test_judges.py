"""The judges beside the paper's model: how they decide in the engine, train on a batch and travel in checkpoints."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import decisive_model, make_inputs
from lasagna.api import Lasagna
from lasagna.checkpoint import CheckpointError, read_weights, save_pretrained
from lasagna.config import JudgesConfig, preset
from lasagna.judges import Judges
from lasagna.model.lasagna import LasagnaModel
from lasagna.tokens import IGNORE_INDEX, IMAGE_TOKEN_ID, token_ids

CLASSES = ["wall", "bed", "sky", "red circle", "blue square"]
IMG, INS, NO_INS = IMAGE_TOKEN_ID, 10, 11


def _image(seed=3, h=33, w=47):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _judged(tokenizer, **flags):
    model = decisive_model(tokenizer, 3)
    ids = token_ids(tokenizer)
    model.set_token_ids(ids.ins, ids.pad, ids.no_ins)
    return model, Judges.for_model(model, JudgesConfig(**flags), seed=0)


@pytest.mark.parametrize("vote", [-30.0, 30.0])
def test_a_presence_verifier_decides_with_the_llm_by_its_fusion(tiny_tokenizer, vote):
    plain = decisive_model(tiny_tokenizer, 3)
    verified, judges = _judged(tiny_tokenizer, presence_verifier=True)
    segment = dict(classes=CLASSES, chunk_size=2, decoder="template")
    a = Lasagna(plain, tiny_tokenizer).segment(_image(), **segment)
    b = Lasagna(verified, tiny_tokenizer, judges).segment(_image(), **segment)
    assert [(x.present, x.score) for x in a.classes] == [(y.present, pytest.approx(y.score)) for y in b.classes]
    with torch.no_grad():  # now the fusion listens to the verifier alone, which says `vote` whatever it sees
        judges.verifier.fusion.weight.copy_(torch.tensor([[0.0, 1.0]]))
        judges.verifier.name.weight.zero_()
        judges.verifier.bias.fill_(vote)
    c = Lasagna(verified, tiny_tokenizer, judges).segment(_image(), **segment)
    assert [y.llm_present for y in c.classes] == [x.present for x in a.classes]  # the LLM answered as before
    assert c.text.count("<ins>") == (len(CLASSES) if vote > 0 else 0)  # the text states the final decisions
    for x, y in zip(a.classes, c.classes, strict=True):
        assert y.present == (vote > 0) and (y.mask is not None) == y.present
        if x.present and y.present:  # a class the LLM answered present keeps the mask it had
            assert (x.mask == y.mask).all()
    # a query's decisions stay the LLM's
    query = Lasagna(verified, tiny_tokenizer, judges).segment(_image(), query="the red circle")
    alone = Lasagna(plain, tiny_tokenizer).segment(_image(), query="the red circle")
    assert query.scores == pytest.approx(alone.scores) and len(query.masks) == len(alone.masks)


@pytest.mark.parametrize("vote", [-30.0, 30.0])
def test_a_query_verifier_decides_a_query_by_its_fusion_and_leaves_class_lists_alone(tiny_tokenizer, vote):
    plain = decisive_model(tiny_tokenizer, 3)
    verified, judges = _judged(tiny_tokenizer, query_verifier=True)
    text = "the red circle left of the blue square"
    alone = Lasagna(plain, tiny_tokenizer).segment(_image(), query=text)
    query = Lasagna(verified, tiny_tokenizer, judges).segment(_image(), query=text)
    assert len(alone.scores) >= 2  # the answer holds decisions to judge
    assert query.scores == pytest.approx(alone.scores) and len(query.masks) == len(alone.masks)
    assert query.evidence.shape == (len(alone.scores), 2)
    with torch.no_grad():  # now the fusion listens to the verifier alone, which says `vote` whatever it sees
        judges.query_verifier.fusion.weight.copy_(torch.tensor([[0.0, 1.0]]))
        judges.query_verifier.head[1].weight.zero_()
        judges.query_verifier.head[1].bias.fill_(vote)
    voted = Lasagna(verified, tiny_tokenizer, judges).segment(_image(), query=text)
    assert len(voted.masks) == (len(alone.scores) if vote > 0 else 0)
    said = voted.text.count("<ins>")  # the text states the final decisions (an empty mask is absent too)
    assert said == len(voted.masks) and voted.text.replace("<no_ins>", "<ins>") == alone.text.replace(
        "<no_ins>", "<ins>"
    )
    # a verifier that says -30 whatever it sees can call nothing present: no slot's mask is drawn for it to see
    seen = [vote] * len(alone.scores) if vote > 0 else [True] * len(alone.scores)
    assert [v if v == v else True for v in voted.evidence[:, 1].tolist()] == seen
    with judges.every_slot():  # what calibration asks: every slot judged
        every = Lasagna(verified, tiny_tokenizer, judges).segment(_image(), query=text)
    assert every.evidence[:, 1].tolist() == [vote] * len(alone.scores) and every.text == voted.text
    segment = dict(classes=CLASSES, chunk_size=2, decoder="template")
    a = Lasagna(plain, tiny_tokenizer).segment(_image(), **segment)
    b = Lasagna(verified, tiny_tokenizer, judges).segment(_image(), **segment)  # class lists are not its to judge
    assert [(x.present, x.score) for x in a.classes] == [(y.present, pytest.approx(y.score)) for y in b.classes]
    assert b.evidence is None


@pytest.mark.parametrize(
    ("skips", "kind"), [(False, "presence"), (True, "presence"), (False, "query"), (True, "query")]
)
def test_a_verifier_trains_alone_on_every_slot_and_leaves_the_model_as_it_was(skips, kind):
    cfg = preset("tiny")
    if skips:
        cfg.sam.conv_stem, cfg.sam.stem_skips = [4, 8, 8], True
    model = LasagnaModel(cfg, seed=0).eval()
    model.set_token_ids(ins_id=INS, pad_id=0, no_ins_id=NO_INS)
    judges = Judges.for_model(model, JudgesConfig(**{f"{kind}_verifier": True}), seed=0)
    judges.configure_training(True)
    module = "verifier" if kind == "presence" else "query_verifier"
    # slots: <ins>, <no_ins>, <ins> (row 0); <no_ins> (row 1); <ins> (row 2, image 1)
    rows = [[1, IMG, 5, INS, 6, NO_INS, 7, INS, 2], [1, IMG, 7, NO_INS, 2], [1, IMG, 8, INS, 2]]
    inputs = make_inputs(rows, [0, 0, 1], [(12, 12), (9, 7)])
    inputs.labels[:, :2] = IGNORE_INDEX  # the answer starts after the image
    out = model(inputs)
    presence, query = judges(model, out, inputs)
    loss, other = (presence, query) if kind == "presence" else (query, presence)
    assert other is None and loss.item() > 0
    loss.backward()
    assert not any(p.grad is not None for p in model.parameters())  # detached inputs: the model does not move
    grads = {n for n, p in judges.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(n.startswith(f"{module}.") for n in grads)
    if kind == "presence":
        assert {"verifier.region.0.weight", "verifier.name.weight", "verifier.bias"} <= grads
    else:  # each part of its judgement gets a gradient: the words' looks, what they found, the region, the reader
        assert {
            "query_verifier.look.weight",
            "query_verifier.cell_key.weight",
            "query_verifier.found.0.weight",
            "query_verifier.region.0.weight",
            "query_verifier.head.1.weight",
        } <= grads
    assert not {f"{module}.fusion.weight", f"{module}.fusion.bias"} & grads  # fit on held-out data, not by gradient


def test_a_verifier_on_a_batch_without_decisions_adds_nothing():
    model = LasagnaModel(preset("tiny"), seed=0)
    model.set_token_ids(ins_id=INS, pad_id=0, no_ins_id=NO_INS)
    judges = Judges.for_model(model, JudgesConfig(presence_verifier=True, query_verifier=True), seed=0)
    judges.configure_training(True)
    inputs = make_inputs([[1, IMG, 5, 6, 2]], [0], [(12, 12)])
    presence, query = judges(model, model(inputs), inputs)
    assert presence.item() == 0.0 and query.item() == 0.0
    (presence + query).backward()  # a gradient path exists, as DDP needs on every rank
    assert judges.query_verifier.head[1].weight.grad is not None


def test_judges_travel_beside_the_model_and_a_checkpoint_of_the_old_form_still_loads(tiny_tokenizer, tmp_path):
    model, judges = _judged(tiny_tokenizer, presence_verifier=True, instance_picker=True)
    folder = save_pretrained(model, tiny_tokenizer, tmp_path / "new", judges=judges)
    header = json.loads((folder / "config.json").read_text())
    assert header["format_version"] == 2 and header["judges"]["presence_verifier"]
    assert "presence_verifier" not in header["model"]
    assert {k.split(".")[0] for k in read_weights(folder)} >= {"verifier", "instance_picker", "llm", "sam"}
    loaded = Lasagna.from_pretrained(folder)
    assert loaded.judges.cfg == JudgesConfig(presence_verifier=True, instance_picker=True)
    assert all(torch.equal(v, loaded.judges.state_dict()[k]) for k, v in judges.state_dict().items())
    # version 1 listed the judges among the model's fields
    header["format_version"] = 1
    header["model"].update(header.pop("judges"))
    (folder / "config.json").write_text(json.dumps(header))
    old = Lasagna.from_pretrained(folder)
    assert old.judges.cfg == loaded.judges.cfg
    a = old.segment(_image(), classes=CLASSES, decoder="template")
    b = loaded.segment(_image(), classes=CLASSES, decoder="template")
    assert [(c.present, c.score) for c in a.classes] == [(c.present, c.score) for c in b.classes]
    # weights of a judge the config does not list are refused by name
    header["model"]["presence_verifier"] = False
    (folder / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=r"unexpected \(\d+\): verifier\."):
        Lasagna.from_pretrained(folder)


def test_the_embedded_model_loads_with_its_three_judges():
    lasagna = Lasagna.from_pretrained()
    assert lasagna.judges.cfg == JudgesConfig(True, True, True)
    names = lasagna.model.state_dict()
    assert not any(name.startswith(("verifier", "query_verifier", "instance_picker")) for name in names)


REMOVED = """
import sys
sys.modules["lasagna.judges"] = None  # as if the package were deleted: importing it fails
{body}
"""


def _without_judges(body: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", REMOVED.format(body=body)], cwd=cwd, capture_output=True, text=True, timeout=240
    )


def test_without_the_judges_package_the_paper_model_segments_and_a_judged_checkpoint_says_what_it_needs(
    tiny_tokenizer, tmp_path
):
    plain = save_pretrained(decisive_model(tiny_tokenizer, 3), tiny_tokenizer, tmp_path / "plain")
    model, judges = _judged(tiny_tokenizer, presence_verifier=True)
    judged = save_pretrained(model, tiny_tokenizer, tmp_path / "judged", judges=judges)
    body = f"""
import numpy as np
from lasagna.api import Lasagna
from lasagna.cli import build_parser
image = np.full((20, 30, 3), 90, np.uint8)
pred = Lasagna.from_pretrained({str(plain)!r}).segment(image, classes=["sky", "wall"], decoder="template")
print("segmented", len(pred.classes))
print("commands", sorted(build_parser()._subparsers._group_actions[0].choices))
try:
    Lasagna.from_pretrained({str(judged)!r})
except Exception as e:
    print("refused", type(e).__name__, e)
"""
    run = _without_judges(body, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "segmented 2" in run.stdout
    commands = run.stdout.split("commands", 1)[1]
    assert "'segment'" in commands and "'train'" in commands and "'eval'" in commands
    assert "calibrate" not in commands and "train-picker" not in commands
    assert "refused CheckpointError" in run.stdout and "lasagna.judges" in run.stdout


def test_without_the_judges_package_the_paper_model_trains_and_evaluates(tmp_path):
    from helpers import TINY

    run, report = tmp_path / "run", tmp_path / "eval.json"
    body = f"""
from lasagna.cli import main
train = main(["train", "out_dir={run}", *{TINY!r}, "optim.steps=1", "save_every=1"])
evaluate = main(["eval", "--model", "{run / "final"}", "--dataset", "shapeworld", "--split", "val", "--limit", "1",
                 "--tasks", "semantic", "--out", "{report}"])
print("exit", train, evaluate)
"""
    done = _without_judges(body, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exit 0 0" in done.stdout
    assert "semantic" in json.loads(report.read_text())


def test_masks_are_drawn_for_present_slots_and_those_a_judge_could_still_flip(tiny_tokenizer, monkeypatch):
    names = [f"{w} {i}" for i, w in enumerate(CLASSES * 6)]
    verified, judges = _judged(tiny_tokenizer, presence_verifier=True)
    drawn = []
    real = verified.sam.decode
    monkeypatch.setattr(verified.sam, "decode", lambda e, p, s=(): drawn.append(len(p)) or real(e, p, s))
    segment = dict(classes=names, chunk_size=8, decoder="template")
    plain = Lasagna(verified, tiny_tokenizer).segment(_image(), **segment)
    assert sum(drawn) == len(plain.present) < len(names)  # no judge: the present slots' masks only
    with torch.no_grad():  # the verifier says 0.3 whatever it sees and declares the range [-0.5, 0.5]; fused = llm + v
        judges.verifier.fusion.weight.copy_(torch.tensor([[1.0, 1.0]]))
        judges.verifier.name.weight.zero_()
        judges.verifier.name.bias.zero_()
        judges.verifier.bias.fill_(0.3)
    monkeypatch.setattr(judges.verifier, "log_odds_range", lambda: (-0.5, 0.5))
    lasagna = Lasagna(verified, tiny_tokenizer, judges)
    with judges.every_slot():  # calibration's view: every slot drawn and judged
        drawn.clear()
        every = lasagna.segment(_image(), **segment)
        assert sum(drawn) == len(names)
    drawn.clear()
    banded = lasagna.segment(_image(), **segment)
    llm = every.evidence[:, 0]
    seen = llm + 0.5 >= 0  # below the band (llm < -0.5) a slot is absent whatever the verifier says: no mask
    assert sum(drawn) == int(seen.sum()) and 0 < sum(drawn) < len(names)
    assert banded.present == every.present and banded.text == every.text
    for a, b, low, judged in zip(banded.classes, every.classes, llm.tolist(), seen.tolist(), strict=True):
        assert a.score == pytest.approx(b.score if judged else torch.sigmoid(torch.tensor(low + 0.5)).item())
    assert banded.evidence[~seen, 1].isnan().all() and not banded.evidence[seen].isnan().any()


def test_the_query_verifiers_declared_range_holds_for_any_input_and_is_nearly_reached():
    from lasagna.judges.query import QueryVerifier

    torch.manual_seed(0)
    verifier = QueryVerifier(16, 8, width=32)
    with torch.no_grad():
        verifier.head[0].weight.normal_()
        verifier.head[0].bias.normal_()
        low, high = verifier.log_odds_range()
        out = verifier.head(torch.randn(2000, 32) * torch.logspace(-2, 3, 2000)[:, None])[:, 0]
        assert low <= out.min() and out.max() <= high
        u = verifier.head[1].weight[0] * verifier.head[0].weight
        best = verifier.head((u - u.mean())[None])[0, 0]  # the normalised input along u reaches the top
        assert best == pytest.approx(high, rel=0.03)
