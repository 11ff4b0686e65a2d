"""Networks: HashGrid, FeatureHead, StyleDecoder and the JointModel built of them."""

from fastjoint.model.decoder import StyleDecoder
from fastjoint.model.hashgrid import HashGrid
from fastjoint.model.head import FeatureHead
from fastjoint.model.joint import HashGridEncoder, JointModel, QueryResult

__all__ = ["FeatureHead", "HashGrid", "HashGridEncoder", "JointModel", "QueryResult", "StyleDecoder"]
