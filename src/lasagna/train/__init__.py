"""Training: `fit.py` is the main loop, whose steps (like those of the pretraining stages `encoders.py` and
`decoder.py`) run in `loop.py`; `stages.py` runs what comes before and after it, `state.py` keeps checkpoints,
`optim.py` the optimizer's settings, `export.py` turns a run into a model folder, `zero.py` handles DeepSpeed ZeRO."""
