"""`lasagna serve` under a mixed load: 8 clients for 60 s send good and bad requests in a seeded random mix.

Each bad kind has the status and field its error must name; the report counts requests served, errors by status,
bad requests whose answer was not the expected 4xx naming its field ("wrong"), latency of the good ones and the
server's peak memory. The server runs with an API key and a 1 MB upload limit (so the oversized upload is cheap).

    python benchmarks/serve_load.py                      # 8 clients, 60 s
    python benchmarks/serve_load.py --clients 4 --seconds 20
"""

from __future__ import annotations

import argparse
import base64
import io
import random
from collections import Counter, defaultdict
from pathlib import Path

import httpx2
import numpy as np
from PIL import Image

from serve_client import ROOT, Reply, Server, cpu_note, percentile, run_clients, timed

KEY = "load-test-key"
JSON = "application/json"
CONTENT_TYPE = ["header", "Content-Type"]


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def kinds() -> dict[str, tuple[dict, int, list | None]]:
    """name -> (httpx keyword arguments, expected status, expected `loc` of the error or None for a 200)."""
    shapes = (ROOT / "examples" / "shapes.png").read_bytes()
    other = (ROOT / "examples" / "shapeworld-test-0.png").read_bytes()
    classes = ", ".join(c for c in (ROOT / "examples" / "shapes-classes.txt").read_text().splitlines() if c.strip())
    b64 = base64.b64encode(other).decode()

    def form(image=shapes, name="shapes.png", **fields):
        return {"files": {"image": (name, image, "image/png")}, "data": fields}

    return {
        "good: classes (multipart)": (form(classes=classes), 200, None),
        "good: classes (JSON)": ({"json": {"image": b64, "classes": ["sky", "grass", "red circle"]}}, 200, None),
        "good: query": (form(query="the orange cross"), 200, None),
        "good: chat": ({"json": {"image": b64, "text": "How many stars are there?"}}, 200, None),
        "bad: not an image": (form(b"GIF89a but not really", classes="sky"), 422, ["body", "image"]),
        "bad: truncated PNG": (form(shapes[:300], classes="sky"), 422, ["body", "image"]),
        "bad: too many pixels": (form(png(np.zeros((2100, 2100, 3), np.uint8)), classes="sky"), 413, ["body", "image"]),
        "bad: upload too large": (form(b"\0" * (1536 * 1024), classes="sky"), 413, ["body"]),
        "bad: too many classes": (form(classes=", ".join(f"class {i}" for i in range(201))), 422, ["body", "classes"]),
        "bad: class name too long": (form(classes="sky, " + "x" * 65), 422, ["body", "classes"]),
        "bad: class listed twice": (form(classes="sky, grass, sky"), 422, ["body", "classes"]),
        "bad: reserved token": (form(classes="sky<ins>"), 422, ["body", "classes"]),
        "bad: query too long": (form(query="the star " * 60), 422, ["body", "query"]),
        "bad: chunk_size 0": (form(classes="sky", chunk_size="0"), 422, ["body", "chunk_size"]),
        "bad: classes and query": ({"json": {"image": b64, "classes": ["sky"], "query": "sky"}}, 422, ["body"]),
        "bad: JSON syntax": ({"content": b'{"image": ', "headers": {"content-type": JSON}}, 422, ["body"]),
        "bad: content type": ({"content": b"sky", "headers": {"content-type": "text/plain"}}, 415, CONTENT_TYPE),
        "bad: no API key": ({**form(classes="sky"), "headers": {"X-API-Key": ""}}, 401, ["header", "Authorization"]),
    }  # fmt: skip


def as_expected(reply: Reply, status: int, loc: list | None) -> bool:
    if reply.status != status:
        return False
    if loc is None:
        return True
    detail = reply.body.get("detail") if isinstance(reply.body, dict) else None
    return isinstance(detail, list) and bool(detail) and detail[0].get("loc") == loc and bool(detail[0].get("msg"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--good", type=float, default=0.5, help="share of good requests (0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", help="checkpoint folder (default: the embedded model)")
    args = p.parse_args()

    table = kinds()
    good = [k for k, (_, status, _) in table.items() if status == 200]
    bad = [k for k in table if k not in good]
    # request n is good or bad at random (seeded); the kinds of each sort take turns, so all of them are sent
    draws, plan, turns = random.Random(args.seed), [], {True: 0, False: 0}
    for _ in range(100_000):
        is_good = draws.random() < args.good
        sort = good if is_good else bad
        plan.append(sort[turns[is_good] % len(sort)])
        turns[is_good] += 1

    def ask(client, n: int) -> Reply:
        kind = plan[n % len(plan)]
        kwargs, _, _ = table[kind]
        path = "/v1/chat" if kind == "good: chat" else "/v1/segment"
        return timed(kind, lambda: client.post(path, **kwargs))

    model = ["--model", args.model] if args.model else []
    with Server(*model, "--api-key", KEY, "--max-upload-mb", "1", log=Path("/tmp/lasagna-load.log")) as server:
        replies, wall = run_clients(server.url, args.clients, args.seconds, ask, headers={"X-API-Key": KEY})
        alive = timed("health", lambda: httpx2.get(server.url + "/v1/health")).status == 200
        rss = server.peak_rss_mb()

    by_kind: dict[str, list[Reply]] = defaultdict(list)
    for r in replies:
        by_kind[r.kind].append(r)
    statuses = Counter(r.status for r in replies)
    wrong = [r for r in replies if not as_expected(r, *table[r.kind][1:])]
    ok = [r.seconds * 1000 for r in replies if r.status == 200]
    print(f"{args.clients} clients, {wall:.0f} s, {len(replies)} requests ({len(replies) / wall:.1f}/s); {cpu_note()}")
    errors = dict(sorted((s, n) for s, n in statuses.items() if s != 200))
    print(f"served (200): {statuses[200]}   errors by status: {errors}")
    print(f"server errors (5xx or no answer): {sum(n for s, n in statuses.items() if s >= 500 or s == 0)}")
    print(f"answers not as expected (wrong status, or an error not naming its field): {len(wrong)}")
    print(f"latency of the served requests: p50 {percentile(ok, 0.5):.0f} ms, p95 {percentile(ok, 0.95):.0f} ms")
    print(f"peak server memory (RSS): {rss:.0f} MB; server alive after the run: {alive}")
    print(f"{'kind':<28} {'count':>5} {'status':>6} {'p50 ms':>7}  as expected")
    for kind, (_, status, _) in table.items():
        got = by_kind.get(kind, [])
        fine = sum(as_expected(r, status, table[kind][2]) for r in got)
        p50 = percentile([r.seconds * 1000 for r in got], 0.5)
        print(f"{kind:<28} {len(got):>5} {status:>6} {p50:>7.0f}  {fine}/{len(got)}")
    for r in wrong[:5]:
        print("unexpected:", r.kind, r.status, str(r.body)[:200])


if __name__ == "__main__":
    main()
