"""Modules that are not the paper's: second opinions on the LLM's decisions, and a picker of a mask's pieces.

LaSagnA's LLM alone decides `<ins>` or `<no_ins>`, and each `<ins>` draws one mask. The embedded ShapeWorld model,
whose encoders were trained from scratch, adds three modules on top of the paper's model, all reading detached
inputs (training them moves nothing else):

- the presence verifier (`presence.py`): does the region a class slot's mask covers look like the name it answers?
- the query verifier (`query.py`): does a query's phrase hold of the region its slot's mask covers?
- the instance picker (`picker.py`): which separate pieces of a query slot's mask does the phrase mean?

`Judges` holds the ones a checkpoint has and plugs into the inference engine through its `Judge` protocol
(`lasagna.infer.engine.Judge`); the paper's model and the engine never import this package. Their state-dict names
(`verifier.*`, `query_verifier.*`, `instance_picker.*`) sit beside the model's in one weights file, and the
checkpoint's `config.json` lists them under "judges" (`lasagna.config.JudgesConfig`).
"""

from __future__ import annotations

__all__ = ["PREFIXES", "Judges"]


def __getattr__(name: str):
    # why lazy: `lasagna --help` imports this package's cli.py, and must not pay for importing torch.
    if name in __all__:
        from . import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'lasagna.judges' has no attribute {name!r}")
