"""Command validation and clamping (pure functions, hand-computed expectations)."""

import math

import numpy as np
import pytest

from dexndm.hand.safety import CommandRejected, clamp_targets, command_from_named
from dexndm.hand.spec import load_hand_spec


@pytest.fixture(scope="module")
def spec():
    return load_hand_spec("leap")


def test_subset_by_name_in_any_order_keeps_the_rest(spec):
    current = spec.pose("home")
    names = [spec.joint_names[5], spec.joint_names[1]]
    res = command_from_named(spec, names, [0.1, -0.2], current)
    expected = current.copy()
    expected[5], expected[1] = 0.1, -0.2
    np.testing.assert_array_equal(res.targets, expected)
    assert res.n_clamped == 0


def test_out_of_limit_targets_are_clamped_and_counted(spec):
    current = spec.pose("home")
    j = spec.joint_names[0]
    res = command_from_named(spec, [j], [spec.upper[0] + 3.0], current)
    assert res.targets[0] == spec.upper[0]
    assert res.n_clamped == 1
    res = command_from_named(spec, [j], [-1e9], current)
    assert res.targets[0] == spec.lower[0]


@pytest.mark.parametrize(
    "names, values, field",
    [
        (["if_mcp"], [math.nan], "non-finite"),
        (["if_mcp"], [math.inf], "non-finite"),
        (["if_mcp", "if_rot"], [0.1], "must match"),
        (["nope"], [0.1], "unknown joint"),
        (["if_mcp", "if_mcp"], [0.1, 0.2], "duplicated"),
        ([], [], "empty"),
    ],
)
def test_bad_commands_are_rejected_with_the_reason(spec, names, values, field):
    current = spec.pose("home")
    with pytest.raises(CommandRejected, match=field):
        command_from_named(spec, names, values, current)


def test_clamp_targets_rejects_wrong_shape_and_nan(spec):
    with pytest.raises(CommandRejected, match="shape"):
        clamp_targets(spec, np.zeros(3))
    t = np.zeros(spec.n)
    t[2] = np.nan
    with pytest.raises(CommandRejected, match=spec.joint_names[2]):
        clamp_targets(spec, t)
