"""Hand layer: HandSpec (joints, limits, orderings), the Hand interface and its backends."""

from dexndm.hand.interface import Hand, HandError, HandState
from dexndm.hand.spec import HandSpec, JointSpec, Ordering, load_hand_spec

__all__ = ["Hand", "HandError", "HandSpec", "HandState", "JointSpec", "Ordering", "load_hand_spec"]
