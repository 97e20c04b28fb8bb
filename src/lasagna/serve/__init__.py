"""`lasagna serve`: the HTTP API (`/v1/...`, FastAPI on uvicorn, with request batching) and the web page at `/`.

`lasagna.serve.app.create_app(model, settings)` builds the app around a loaded `Lasagna`; `lasagna serve`
(`serve/cli.py`) runs it. Nothing here is imported by `lasagna` itself, so the CLI starts without FastAPI.
"""
