"""fastjoint: restyle a 3D scene by analogy with jointly trained radiance fields."""

__version__ = "0.1.0"
