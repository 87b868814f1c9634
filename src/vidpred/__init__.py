"""vidpred: action-conditioned stochastic video prediction (SVG-LP family).

Axis convention used everywhere: frames are batch-first ``(B, T, C, H, W)``
floats in [0, 1]; conditions are ``(B, T, 7)`` = concat(action (4), end-effector
position (3)) per time step.
"""

__version__ = "0.1.0"
