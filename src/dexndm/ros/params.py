"""Declare ROS parameters with descriptions (and ranges) from (name, default, description) tables."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


def declare(node: Node, name: str, default: Any, description: str, *,
            lo: float | None = None, hi: float | None = None, read_only: bool = False) -> Any:
    desc = ParameterDescriptor(description=description, read_only=read_only)
    if lo is not None and hi is not None:
        if isinstance(default, bool):
            pass
        elif isinstance(default, int):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        elif isinstance(default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return node.declare_parameter(name, default, desc).value


def declare_table(node: Node, prefix: str, table: Iterable[tuple[str, Any, str]]) -> dict[str, Any]:
    """Declare ``prefix.name`` for each row; returns {name: value}."""
    out = {}
    for row in table:
        name, default, description = row[0], row[1], row[2]
        out[name] = declare(node, f"{prefix}.{name}" if prefix else name, default, description)
    return out
