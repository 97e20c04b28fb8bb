"""`lasagna segment` over folders: the per-image and run-level files, resuming, bad images, batches, queries."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from helpers import SEGMENT_CLASSES as CLASSES
from helpers import write_scenes
from lasagna import rle
from lasagna.api import Lasagna
from lasagna.cli import main
from lasagna.infer import batch as batch_module
from lasagna.infer.batch import segment_batch
from lasagna.infer.engine import Engine
from lasagna.infer.listing import find_images
from lasagna.infer.outputs import write_image_outputs
from lasagna.preprocess import to_rgb


def _segment(folder, ckpt, out, *extra) -> int:
    return main(["segment", str(folder), "--model", str(ckpt), "--out", str(out), "--workers", "0", *extra])


def _json(path):
    return json.loads(path.read_text())


def test_a_folder_run_writes_every_image_and_coco_files(run_ckpt, tmp_path, capsys):
    write_scenes(tmp_path / "imgs", 6)
    out = tmp_path / "out"
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--recursive", "--classes", CLASSES) == 0
    assert "6 image(s) segmented, 0 already done, 0 failed" in capsys.readouterr().out
    rels = ["img0", "img1", "img3", "img4", "sub/img2", "sub/img5"]
    assert sorted(str(p.parent.relative_to(out)) for p in out.rglob("result.json")) == rels
    assert all({p.name for p in (out / rel).iterdir()} == {"result.json", "overlay.png", "label.png"} for rel in rels)
    names = [c.strip() for c in CLASSES.split(",")]
    assert _json(out / "run.json")["settings"]["classes"] == names
    assert _json(out / "categories.json") == [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    images = _json(out / "images.json")
    assert [(i["id"], i["file_name"]) for i in images] == [(k + 1, f"{rel}.png") for k, rel in enumerate(rels)]
    predictions = _json(out / "predictions.json")
    expected = []
    for image in images:
        result = _json(out / image["file_name"].removesuffix(".png") / "result.json")
        with Image.open(tmp_path / "imgs" / image["file_name"]) as picture:
            assert [image["height"], image["width"]] == result["image_size"] == [picture.height, picture.width]
        for k, c in enumerate(result["classes"]):
            if c["present"]:
                expected.append((image["id"], k + 1, c["mask"]["counts"], c["score"]))
    assert (
        expected
        and [(p["image_id"], p["category_id"], p["segmentation"]["counts"], p["score"]) for p in predictions]
        == expected
    )
    assert (out / "errors.jsonl").read_text() == ""
    coco = COCO()  # the files load as COCO ground-truth images and categories plus results
    coco.dataset = {"images": images, "categories": _json(out / "categories.json"), "annotations": []}
    coco.createIndex()
    assert len(coco.loadRes(str(out / "predictions.json")).getAnnIds()) == len(predictions)


def test_a_rerun_does_only_what_is_missing(run_ckpt, tmp_path, capsys):
    write_scenes(tmp_path / "imgs", 4)
    out = tmp_path / "out"
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--classes", CLASSES, "--no-overlay") == 0
    assert not list(out.rglob("overlay.png"))
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--classes", CLASSES, "--no-overlay") == 0
    assert "0 image(s) segmented, 3 already done" in capsys.readouterr().out
    first = {p: p.stat().st_ino for p in out.rglob("result.json")}
    (out / "img1" / "label.png").unlink()  # an incomplete folder is redone
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--classes", CLASSES, "--no-overlay") == 0
    assert "1 image(s) segmented, 2 already done" in capsys.readouterr().out
    assert [p for p, ino in first.items() if p.stat().st_ino != ino] == [out / "img1" / "result.json"]
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--classes", CLASSES) == 0  # an overlay is asked for now
    assert "3 image(s) segmented, 0 already done" in capsys.readouterr().out
    assert len(list(out.rglob("overlay.png"))) == 3
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--classes", CLASSES, "--overwrite") == 0
    assert "3 image(s) segmented, 0 already done" in capsys.readouterr().out


def test_a_bad_image_is_reported_and_skipped_unless_strict(run_ckpt, tmp_path, capsys):
    write_scenes(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "bad.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--classes", CLASSES) == 1
    err = capsys.readouterr().err
    assert "bad.png" in err and "errors.jsonl" in err
    (line,) = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert line["path"] == str(tmp_path / "imgs" / "bad.png") and line["error"] == "ImageReadError"
    assert "bad.png" in line["message"] and not (out / "bad").exists()
    assert [(i["id"], i["file_name"]) for i in _json(out / "images.json")] == [(2, "img0.png"), (3, "img1.png")]
    assert _segment(tmp_path / "imgs", run_ckpt, tmp_path / "strict", "--classes", CLASSES, "--strict") == 2
    assert "bad.png" in capsys.readouterr().err and not (tmp_path / "strict" / "img0").exists()


def test_a_failing_batch_is_retried_image_by_image(run_ckpt, tmp_path, capsys, monkeypatch):
    write_scenes(tmp_path / "imgs", 4)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    real = Engine.segment_classes

    def tall_images_fail(self, image, *args, **kwargs):
        if image.size[0] == 30:  # the runner hands the engine `PreparedImage`s
            raise RuntimeError("out of memory")
        return real(self, image, *args, **kwargs)

    monkeypatch.setattr(batch_module, "segment_batch", out_of_memory)  # run.py imports it at the call
    monkeypatch.setattr(Engine, "segment_classes", tall_images_fail)
    out = tmp_path / "out"
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--classes", CLASSES, "--batch-size", "4") == 1
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["path"].rsplit("/", 1)[1], e["error"]) for e in errors] == [("img0.png", "RuntimeError")]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["img1", "img3"]  # img2 is in sub/, not searched
    capsys.readouterr()


def test_batches_give_the_answers_of_one_image_at_a_time(run_ckpt, tmp_path, capsys):
    write_scenes(tmp_path / "imgs", 6)
    args = ["--recursive", "--classes", CLASSES]
    assert _segment(tmp_path / "imgs", run_ckpt, tmp_path / "one", *args) == 0
    assert _segment(tmp_path / "imgs", run_ckpt, tmp_path / "three", *args, "--batch-size", "3", "--workers", "1") == 0
    capsys.readouterr()
    present = 0
    for path in (tmp_path / "one").rglob("result.json"):
        alone = _json(path)["classes"]
        batched = _json(tmp_path / "three" / path.relative_to(tmp_path / "one"))["classes"]
        assert [c["present"] for c in batched] == [c["present"] for c in alone]
        for a, b in zip(alone, batched, strict=True):
            if a["present"]:  # the same up to float rounding: masks may differ at a few boundary pixels
                assert np.mean(rle.decode(a["mask"]) != rle.decode(b["mask"])) < 0.01
                present += 1
    assert present > 0


def test_a_query_run_has_the_query_as_its_category(run_ckpt, tmp_path, capsys):
    write_scenes(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--query", "the red circle") == 0
    capsys.readouterr()
    assert _json(out / "categories.json") == [{"id": 1, "name": "the red circle"}]
    assert _json(out / "run.json")["settings"] == {"model": str(run_ckpt.resolve()), "query": "the red circle"}
    masks = [m for p in sorted(out.rglob("result.json")) for m in _json(p)["masks"]]
    assert [p["segmentation"] for p in _json(out / "predictions.json")] == masks
    assert not list(out.rglob("label.png"))


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (lambda t: None, ["--classes", "sky, <ins>"], "reserved"),
        (lambda t: (t / "out").mkdir() or (t / "out" / "mine.txt").write_text("x"), ["--classes", "sky"], "mine.txt"),
        (lambda t: write_scenes(t / "imgs" / "img0", 1), ["--classes", "sky", "--recursive"], "would write inside"),
        (lambda t: None, ["--classes", "sky", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_runs_are_refused_before_any_image(run_ckpt, tmp_path, capsys, setup, args, message):
    write_scenes(tmp_path / "imgs", 2)
    setup(tmp_path)
    assert _segment(tmp_path / "imgs", run_ckpt, tmp_path / "out", *args) == 2
    assert message in capsys.readouterr().err
    assert not list((tmp_path / "out").rglob("result.json")) and not (tmp_path / "out" / "run.json").exists()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_worker_preprocessing_gives_the_answers_of_arrays_bit_for_bit(run_ckpt, tmp_path, capsys, batch_size):
    """Encoder pixels computed in DataLoader workers (2) or in the main process (0) give the same files, byte for
    byte, and the same result.json as the engine given the decoded arrays (its pixels computed by itself)."""
    write_scenes(tmp_path / "imgs", 5)  # with batch 3: a full batch, then a short one
    args = ["--recursive", "--classes", CLASSES, "--batch-size", str(batch_size)]
    runs = {}
    for workers in ("0", "2"):
        out = tmp_path / f"workers{workers}"
        assert _segment(tmp_path / "imgs", run_ckpt, out, *args, "--workers", workers) == 0  # the last --workers wins
        runs[workers] = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert len(runs["0"]) == 5 * 3 + 5 and runs["0"] == runs["2"]

    api = Lasagna.from_pretrained(run_ckpt)
    names = [c.strip() for c in CLASSES.split(",")]
    items = find_images([str(tmp_path / "imgs")], recursive=True)
    for start in range(0, len(items), batch_size):
        group = items[start : start + batch_size]
        images = [to_rgb(item.path) for item in group]
        if batch_size == 1:
            preds = [api.engine.segment_classes(images[0], names)]
        else:
            preds = segment_batch(api.engine, images, [names] * len(images))
        for item, image, pred in zip(group, images, preds, strict=True):
            pred.warnings.extend(api.vocabulary_warnings(names))
            settings = _json(tmp_path / "workers2" / "run.json")["settings"]
            folder = write_image_outputs(tmp_path / "arrays" / item.rel, image, pred, str(item.path), settings=settings)
            assert (folder / "result.json").read_bytes() == runs["2"][f"{item.rel}/result.json"]


def test_a_folder_left_by_another_question_is_redone(run_ckpt, tmp_path, capsys):
    write_scenes(tmp_path / "imgs", 2)
    out, one = tmp_path / "out", tmp_path / "imgs" / "img0.png"
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--classes", "wall, bed") == 0
    assert _segment(one, run_ckpt, out, "--classes", "sky, tree", "--overwrite") == 0  # img1 keeps the old answer
    capsys.readouterr()
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--classes", "sky, tree") == 0
    assert "1 image(s) segmented, 1 already done" in capsys.readouterr().out
    assert [c["name"] for c in _json(out / "img1" / "result.json")["classes"]] == ["sky", "tree"]
    assert _segment(one, run_ckpt, out, "--query", "the red circle", "--overwrite") == 0
    capsys.readouterr()
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--query", "the red circle") == 0
    assert "1 image(s) segmented, 1 already done" in capsys.readouterr().out
    assert _json(out / "img1" / "result.json")["query"] == "the red circle"
    # the same class list under another decoder: the folder's own settings tell it apart
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--classes", "sky, tree", "--overwrite") == 0
    assert _segment(one, run_ckpt, out, "--classes", "sky, tree", "--decoder", "free", "--overwrite") == 0
    capsys.readouterr()
    assert _segment(tmp_path / "imgs", run_ckpt, out, "--classes", "sky, tree", "--decoder", "free") == 0
    assert "1 image(s) segmented, 1 already done" in capsys.readouterr().out
    assert _json(out / "img1" / "result.json")["settings"] == _json(out / "run.json")["settings"]


def test_a_run_of_another_kind_or_query_is_refused_in_words(tmp_path):
    from lasagna.infer.run import RunSettingsError, RunSpec, check_out, write_run_json

    out = tmp_path / "out"
    out.mkdir()
    write_run_json(out, RunSpec(model="m", classes=["sky"], decoder="template"))
    with pytest.raises(RunSettingsError, match=r"holds a class-list run, and this is a query run; pass --overwrite"):
        check_out(out, RunSpec(model="m", query="the red circle"), overwrite=False)
    write_run_json(out, RunSpec(model="m", query="the red circle"))
    with pytest.raises(RunSettingsError, match=r"other settings \(query differs\)"):
        check_out(out, RunSpec(model="m", query="the blue square"), overwrite=False)
