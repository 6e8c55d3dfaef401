"""Neural dynamics models of the hand (DexNDM): joint-wise, finger-wise and whole-hand models, windowed
datasets, sim data generation and training. No rclpy."""

# Max |correction| per joint (rad) of the sim-to-real adapters: the residual's tanh bound and the
# adaptation node's clamp. Big enough for the stiffness and damping a LEAP servo lacks against the
# training simulator (docs/results/pipeline-leap_default.md), small against the joint ranges.
DEFAULT_BOUND = 0.15

# Correction penalty of the joint residual's objective (train-residual --reg, pipeline --residual-reg). On
# leap_default (eval seed 11, 100 episodes per axis) the plain objective (0) cost rotation against direct
# transfer; 3, with the steps beyond the servos' torque left out, no longer does (the shipped residual's card).
DEFAULT_JOINT_REG = 3.0
