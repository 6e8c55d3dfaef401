"""Rotation policy: proprioceptive history, action integration, the MuJoCo rotation environment,
training (gait specialists -> behaviour-cloned generalist), artifacts and evaluation. No rclpy."""
