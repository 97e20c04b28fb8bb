"""A real server for tests that need one (a browser cannot talk to TestClient): uvicorn in a thread on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from helpers import _free_port


def serve_in_thread(app) -> Iterator[str]:
    """Run `app` on uvicorn in a thread on 127.0.0.1 and a free port; yield its base URL; stop it after."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
