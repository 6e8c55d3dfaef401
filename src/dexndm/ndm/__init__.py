"""Neural dynamics models of the hand (DexNDM): joint-wise, finger-wise and whole-hand models, windowed
datasets, sim data generation and training. No rclpy."""

# Max |correction| per joint (rad) of the sim-to-real adapters: the residual's tanh bound and the
# adaptation node's clamp. Big enough for the stiffness and damping a LEAP servo lacks against the
# training simulator (docs/results/pipeline-leap_default.md), small against the joint ranges.
DEFAULT_BOUND = 0.15
