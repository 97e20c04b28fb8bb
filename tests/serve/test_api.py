"""The HTTP API through FastAPI's TestClient, on the embedded model: answers, limits, bad input, keys, batching."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lasagna import rle
from lasagna.api import to_rgb
from lasagna.cli import main
from lasagna.serve.app import create_app
from lasagna.serve.describe import model_vocabulary
from lasagna.serve.limits import Limits, ServeSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHAPES = (EXAMPLES / "shapes.png").read_bytes()
SHAPE_CLASSES = [c for c in (EXAMPLES / "shapes-classes.txt").read_text().splitlines() if c.strip()]


def client_for(model, raise_server_exceptions: bool = True, **settings) -> TestClient:
    app = create_app(model, ServeSettings(**settings))
    return TestClient(app, raise_server_exceptions=raise_server_exceptions)


@pytest.fixture(scope="module")
def client(embedded):
    with client_for(embedded, vocabulary=model_vocabulary(None)) as c:
        yield c


def upload(image: bytes = SHAPES, name: str = "shapes.png", **fields) -> dict:
    return {"files": {"image": (name, image, "image/png")}, "data": {k: str(v) for k, v in fields.items()}}


def as_json(image: bytes = SHAPES, **fields) -> dict:
    return {"json": {"image": base64.b64encode(image).decode(), **fields}}


def error_at(response, status: int, loc: list) -> str:
    """The message of the response's error, after checking its status and that it names `loc`."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert [d["loc"] for d in detail][:1] == [loc], detail
    return detail[0]["msg"]


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def test_segment_upload_matches_the_cli(client, tmp_path):
    classes = ", ".join(SHAPE_CLASSES[:6])
    response = client.post("/v1/segment", **upload(classes=classes))
    assert response.status_code == 200, response.text
    served = response.json()
    assert main(["segment", str(EXAMPLES / "shapes.png"), "--classes", classes, "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "shapes" / "result.json").read_text())
    assert served["image"] == "shapes.png" and served["warnings"] == []
    for key in ("image_size", "classes", "masks", "answer", "unmatched_names"):
        assert served[key] == written[key], key
    assert any(c["present"] for c in served["classes"]) and any(not c["present"] for c in served["classes"])


def test_json_base64_gives_the_same_answer_with_pictures(client):
    fields = {"classes": SHAPE_CLASSES[:6], "return_overlay": True, "return_label_map": True}
    by_json = client.post("/v1/segment", **as_json(**fields)).json()
    by_form = client.post("/v1/segment", **upload(classes=", ".join(SHAPE_CLASSES[:6]))).json()
    assert by_json["classes"] == by_form["classes"]
    labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(by_json["label_map_png"]))))
    assert labels.shape == (128, 128) and labels.dtype == np.uint8
    for i, c in enumerate(by_json["classes"]):
        if c["present"]:  # most of a present class's mask carries its index (overlaps go to one class)
            assert (labels[rle.decode(c["mask"])] == i).mean() > 0.5, c["name"]
            assert by_json["colors"][c["name"]].startswith("#")
    overlay = Image.open(io.BytesIO(base64.b64decode(by_json["overlay_png"])))
    assert overlay.height >= 512


def test_query_and_chat_answer_as_the_python_api(client, embedded):
    image = to_rgb(EXAMPLES / "shapes.png")
    served = client.post("/v1/segment", **as_json(query="the orange cross")).json()
    direct = embedded.segment(image, query="the orange cross")
    assert served["answer"] == direct.text
    assert [rle.decode(m).sum() for m in served["masks"]] == [m.sum() for m in direct.masks]
    chat = client.post("/v1/chat", **upload(text="How many crosses are there?"))
    assert chat.status_code == 200, chat.text
    assert chat.json()["answer"] == embedded.chat(image, "How many crosses are there?", max_new_tokens=128)


def test_health_model_and_class_lists(client):
    assert client.get("/v1/health").json()["status"] == "ok"
    model = client.get("/v1/model").json()
    assert model["default_decoder"] == "template" and model["tokenizer_size"] > 100
    assert model["sizes"]["llm"]["hidden_size"] > 0 and "red circle" in model["vocabulary"]
    lists = {entry["id"]: entry["classes"] for entry in client.get("/v1/classlists").json()["lists"]}
    assert len(lists["ade20k-150"]) == 150 and len(lists["coco-stuff-171"]) == 171 and "sky" in lists["model"]
    assert client.get("/").text.startswith("<!doctype html>")
    assert client.get("/static/app.js").status_code == 200
    assert "/v1/segment" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "loc"),
    [
        (as_json(b"not an image at all", classes=["sky"]), 422, ["body", "image"]),
        (as_json(SHAPES[: len(SHAPES) // 2], classes=["sky"]), 422, ["body", "image"]),
        (as_json(b"", classes=["sky"]), 422, ["body", "image"]),
        (as_json(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n", classes=["sky"]), 422, ["body", "image"]),
        ({"json": {"image": "%%% not base64", "classes": ["sky"]}}, 422, ["body", "image"]),
        ({"json": {"classes": ["sky"]}}, 422, ["body", "image"]),
        ({"files": {"picture": ("a.png", SHAPES)}, "data": {"classes": "sky"}}, 422, ["body", "image"]),
        (upload(classes=" , "), 422, ["body", "classes"]),
        (as_json(classes=["sky", "Sky"]), 422, ["body", "classes"]),
        (as_json(classes=["sky<ins>"]), 422, ["body", "classes"]),
        (as_json(classes="sky, grass"), 422, ["body", "classes"]),
        (as_json(classes=["sky"], chunk_size=0), 422, ["body", "chunk_size"]),
        (as_json(classes=["sky"], decoder="beam"), 422, ["body", "decoder"]),
        (as_json(classes=["sky"], colour="red"), 422, ["body", "colour"]),
        (as_json(classes=["sky"], query="the sky"), 422, ["body"]),
        (as_json(query="   "), 422, ["body", "query"]),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, ["body"]),
        ({"content": b"[1, 2]", "headers": {"content-type": "application/json"}}, 422, ["body"]),
        ({"content": b"[" * 200_000, "headers": {"content-type": "application/json"}}, 422, ["body"]),
        ({"content": b"sky", "headers": {"content-type": "text/plain"}}, 415, ["header", "Content-Type"]),
    ],
    ids=lambda v: None,
)
def test_bad_requests_get_a_4xx_naming_the_field(client, request_kwargs, status, loc):
    assert error_at(client.post("/v1/segment", **request_kwargs), status, loc)


def test_each_limit_is_a_4xx_naming_its_field(embedded):
    limits = Limits(
        max_upload_bytes=60_000,
        max_pixels=100 * 100,
        max_classes=3,
        max_name_chars=12,
        max_query_chars=20,
        max_chunk_size=4,
        max_new_tokens=8,
    )
    with client_for(embedded, limits=limits) as c:
        post = c.post
        assert "--max-upload-mb" in error_at(post("/v1/segment", **upload(b"x" * 70_000, classes="sky")), 413, ["body"])
        assert "--max-pixels" in error_at(
            post("/v1/segment", **upload(classes="sky", chunk_size=2)), 413, ["body", "image"]
        )
        small = png(to_rgb(EXAMPLES / "shapes.png")[:64, :64])
        assert error_at(
            post("/v1/segment", **upload(small, classes="a, b, c, d", chunk_size=2)), 422, ["body", "classes"]
        )
        assert error_at(
            post("/v1/segment", **upload(small, classes="a very long class name", chunk_size=2)),
            422,
            ["body", "classes"],
        )
        assert error_at(post("/v1/segment", **upload(small, query="the star " * 5)), 422, ["body", "query"])
        assert error_at(post("/v1/segment", **upload(small, classes="sky", chunk_size=5)), 422, ["body", "chunk_size"])
        assert error_at(post("/v1/chat", **upload(small, text="why " * 10)), 422, ["body", "text"])
        assert error_at(
            post("/v1/chat", **upload(small, text="why", max_new_tokens=9)), 422, ["body", "max_new_tokens"]
        )
        assert post("/v1/segment", **upload(small, classes="sky, grass", chunk_size=2)).status_code == 200
    with client_for(embedded, limits=Limits(request_timeout=1e-4)) as c:
        assert "--request-timeout" in error_at(c.post("/v1/segment", **upload(classes="sky")), 408, ["request"])
        assert c.get("/v1/health").json()["status"] == "ok"


def test_api_key_is_required_as_bearer_or_header(embedded):
    with client_for(embedded, api_key="s3cret") as c:
        form = upload(classes="sky")
        assert error_at(c.post("/v1/segment", **form), 401, ["header", "Authorization"])
        assert error_at(c.get("/v1/model", headers={"X-API-Key": "wrong"}), 401, ["header", "Authorization"])
        assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/v1/segment", headers={"X-API-Key": "s3cret"}, **form).status_code == 200
        assert c.get("/v1/health").status_code == 200 and c.get("/").status_code == 200  # no secrets there


def test_concurrent_requests_are_batched_and_answered_independently(embedded):
    images = [EXAMPLES / "shapes.png", EXAMPLES / "shapeworld-test-0.png", EXAMPLES / "shapeworld-test-1.png"]
    asks = [(images[i % 3], SHAPE_CLASSES[i : i + 3 + i % 3]) for i in range(5)]
    bad = {"files": {"image": ("bad.png", b"\x89PNG broken")}, "data": {"classes": "sky"}}
    with client_for(embedded, max_batch=8, batch_timeout=2.0) as c:

        def ask(i):
            if i == len(asks):
                return c.post("/v1/segment", **bad)
            path, classes = asks[i]
            return c.post("/v1/segment", **upload(path.read_bytes(), classes=", ".join(classes), chunk_size=2))

        with ThreadPoolExecutor(len(asks) + 1) as pool:
            responses = list(pool.map(ask, range(len(asks) + 1)))
        assert max(c.app.state.batcher.batch_sizes) > 1
    assert error_at(responses[-1], 422, ["body", "image"])
    for (path, classes), response in zip(asks, responses, strict=False):
        assert response.status_code == 200, response.text
        alone = embedded.segment(to_rgb(path), classes=classes, chunk_size=2)
        served = response.json()["classes"]
        assert [c["name"] for c in served] == classes
        assert [c["present"] for c in served] == [c.present for c in alone.classes]
        # bfloat16 weights: a batch's shapes move scores by ~1e-3, as the engine's own chunking does (test_batch.py)
        assert [c["score"] for c in served] == pytest.approx([c.score for c in alone.classes], abs=5e-3)


def test_a_failing_batch_falls_back_so_only_the_bad_request_fails(embedded):
    from lasagna.serve.worker import ModelWorker, SegmentJob

    image = to_rgb(EXAMPLES / "shapes.png")
    jobs = [SegmentJob(image, ["sky", "grass"]), SegmentJob(image, ["sky", "sky"]), SegmentJob(image, ["grass"])]
    worker = ModelWorker(embedded)
    results = worker.run(worker.key(jobs[0]), jobs)
    assert isinstance(results[1], ValueError) and "listed twice" in str(results[1])
    assert [c.name for c in results[0].classes] == ["sky", "grass"] and results[2].classes[0].name == "grass"


def test_an_internal_error_is_a_500_and_the_server_stays_up(embedded, monkeypatch):
    with client_for(embedded, raise_server_exceptions=False) as c:
        worker = c.app.state.worker
        monkeypatch.setattr(worker, "_one", lambda job: RuntimeError("boom"))
        assert error_at(c.post("/v1/segment", **upload(classes="sky")), 500, [])
        monkeypatch.undo()
        assert c.post("/v1/segment", **upload(classes="sky")).status_code == 200


def test_serve_refuses_a_public_host_without_a_key():
    from lasagna.serve.cli import check_host

    with pytest.raises(ValueError, match="without an API key"):
        check_host("0.0.0.0", None, insecure=False)
    for host, key, insecure in [("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False),
                                ("0.0.0.0", "k", False), ("0.0.0.0", None, True)]:  # fmt: skip
        check_host(host, key, insecure)
    assert main(["serve", "--host", "0.0.0.0", "--port", "1", "--api-key", ""]) == 2
