"""rdfer: robust dynamic facial expression recognition, fast.

Public API: RDFER (the model), load_model (RDFER.from_checkpoint), predict (rdfer.prediction.predict),
load_config and Config (the config schema). Imported lazily, so `python -m rdfer.data ...` does not pay for
importing torch and the model.
"""

__version__ = "0.1.0"

__all__ = ["RDFER", "Config", "load_config", "load_model", "predict", "__version__"]


def __getattr__(name: str):
    if name == "RDFER":
        from rdfer.models import RDFER

        return RDFER
    if name == "load_model":
        from rdfer.models import RDFER

        return RDFER.from_checkpoint
    if name in ("Config", "load_config"):
        from rdfer import config

        return getattr(config, name)
    if name == "predict":
        from rdfer.prediction import predict

        return predict
    raise AttributeError(f"module 'rdfer' has no attribute {name!r}")
