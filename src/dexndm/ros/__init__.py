"""Thin rclpy nodes and the launcher."""
