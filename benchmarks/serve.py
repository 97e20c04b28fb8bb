"""Request batching in `lasagna serve`, measured: 1 and 8 concurrent clients against a server with batching off
(`--max-batch 1`) and on (`--max-batch 8`), side by side in one table.

Both servers run at once on 127.0.0.1 (one idles while the other is measured) and the four cells are measured in
turns, `--rounds` times, so a machine whose load drifts treats both alike. Every request is a class list over one of
the example images, sent as a multipart upload, as `curl -F` would.

    python benchmarks/serve.py                          # 3 rounds x 10 s per cell
    python benchmarks/serve.py --seconds 20 --rounds 2 --classes-file examples/shapes-classes.txt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from serve_client import ROOT, Reply, Server, cpu_note, percentile, run_clients, timed

IMAGES = ["shapes.png", "shapeworld-test-0.png", "shapeworld-test-1.png"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per cell per round (10)")
    p.add_argument("--rounds", type=int, default=3, help="turns over the four cells (3)")
    p.add_argument("--clients", default="1,8", help="concurrent clients to measure, comma-separated (1,8)")
    p.add_argument("--max-batch", type=int, default=8, help="the batching server's --max-batch (8)")
    p.add_argument("--classes-file", default="examples/shapes-classes.txt")
    p.add_argument("--model", help="checkpoint folder (default: the embedded model)")
    args = p.parse_args()

    classes = ", ".join(c.strip() for c in (ROOT / args.classes_file).read_text().splitlines() if c.strip())
    images = [(name, (ROOT / "examples" / name).read_bytes()) for name in IMAGES]

    def ask(client, n: int) -> Reply:
        name, data = images[n % len(images)]
        files = {"image": (name, data, "image/png")}
        return timed("segment", lambda: client.post("/v1/segment", files=files, data={"classes": classes}))

    model = ["--model", args.model] if args.model else []
    counts = [int(c) for c in args.clients.split(",")]
    settings = {"off": 1, "on": args.max_batch}
    replies: dict[tuple[int, str], list[Reply]] = {(c, s): [] for c in counts for s in settings}
    wall = dict.fromkeys(replies, 0.0)
    cpu = dict.fromkeys(replies, 0.0)  # the server's CPU seconds: steadier than wall time on a shared machine
    with (
        Server(*model, "--max-batch", "1", log=Path("/tmp/lasagna-bench-off.log")) as off,
        Server(*model, "--max-batch", str(args.max_batch), log=Path("/tmp/lasagna-bench-on.log")) as on,
    ):
        servers = {"off": off, "on": on}
        for server in servers.values():  # warm-up: first-call costs are not what is measured
            run_clients(server.url, max(counts), 1, ask)
        for _ in range(args.rounds):
            for c in counts:
                for s, server in servers.items():
                    used = server.cpu_seconds()
                    got, seconds = run_clients(server.url, c, args.seconds, ask)
                    replies[(c, s)] += got
                    wall[(c, s)] += seconds
                    cpu[(c, s)] += server.cpu_seconds() - used
        rss = {s: server.peak_rss_mb() for s, server in servers.items()}

    print(f"{len(IMAGES)} images, {classes.count(',') + 1} classes per request; {cpu_note()}")
    head = f"{'clients':>7}  {'batching':<20} {'requests':>8} {'seconds':>7} {'req/s':>6}"
    print(f"{head} {'p50 ms':>7} {'p95 ms':>7} {'CPU s/req':>9} errors")
    rate = {}
    for c in counts:
        for s, size in settings.items():
            cell = replies[(c, s)]
            ok = [r.seconds * 1000 for r in cell if r.status == 200]
            rate[s] = len(ok) / wall[(c, s)]
            label = f"{s} (--max-batch {size})"
            p50, p95 = percentile(ok, 0.5), percentile(ok, 0.95)
            row = f"{c:>7}  {label:<20} {len(ok):>8} {wall[(c, s)]:>7.0f} {rate[s]:>6.2f} {p50:>7.0f} {p95:>7.0f}"
            print(f"{row} {cpu[(c, s)] / max(len(ok), 1):>9.2f} {len(cell) - len(ok):>6}")
        print(f"{'':>7}  batching on / off at {c} client(s): {rate['on'] / max(rate['off'], 1e-9):.2f}x requests/s")
    print(f"peak server memory: off {rss['off']:.0f} MB, on {rss['on']:.0f} MB; finished {time.strftime('%H:%M')}")


if __name__ == "__main__":
    main()
