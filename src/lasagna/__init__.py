"""LaSagnA: segmentation with complex queries (present and absent classes)."""

__version__ = "0.1.0"

__all__ = ["ClassResult", "Lasagna", "Prediction", "__version__"]


def __getattr__(name: str):
    # Lazy: `import lasagna` (and the CLI's --help) must not pay for importing torch and transformers.
    if name == "Lasagna":
        from .api import Lasagna

        return Lasagna
    if name in ("Prediction", "ClassResult"):
        from .infer import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'lasagna' has no attribute {name!r}")
