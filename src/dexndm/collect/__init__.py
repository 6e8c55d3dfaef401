"""Autonomous real-data collection (Chaos Box): trajectory libraries and the backend-agnostic loop."""
