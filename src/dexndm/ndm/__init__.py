"""Neural dynamics models of the hand (DexNDM): joint-wise, finger-wise and whole-hand models, windowed
datasets, sim data generation and training. No rclpy."""
