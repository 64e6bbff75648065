from rdfer.models.rdfer_net import RDFER

__all__ = ["RDFER"]
