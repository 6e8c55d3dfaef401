"""Node table and launch arguments: one source for `dexndm launch` and `ros2 launch`."""

import ast
from pathlib import Path

import pytest

from dexndm.cli import build_parser, main
from dexndm.ros.bringup import LAUNCHES, node_table, resolve_args

REPO = Path(__file__).resolve().parents[2]


def test_hand_table_parameterises_the_driver():
    (drv,) = node_table("hand", {"hand": "allegro", "wrist": "thumb_up", "reality": "leap_default"})
    assert drv.name == "hand_driver" and drv.required
    assert drv.parameters["hand"] == "allegro"
    assert drv.parameters["sim.wrist"] == "thumb_up"
    assert drv.parameters["sim.reality"] == "leap_default"
    (dxl,) = node_table("hand", {"backend": "dynamixel", "port": "/dev/ttyUSB0"})
    assert dxl.parameters["dynamixel.port"] == "/dev/ttyUSB0"
    assert not any(k.startswith("sim.") for k in dxl.parameters)


@pytest.mark.parametrize("overrides, msg", [
    ({"bogus": 1}, "unknown launch argument 'bogus'"),
    ({"backend": "can"}, "backend 'can' unknown"),
    ({"namespace": "1left"}, "not a valid ROS namespace"),
    ({"axis": "w"}, "--axis"),
    ({"wrist": "sideways"}, "--wrist"),
])
def test_bad_launch_arguments_are_named(overrides, msg):
    with pytest.raises(ValueError, match=msg):
        resolve_args(overrides)


def test_every_launch_has_a_launch_file_built_from_the_same_table():
    for name in LAUNCHES:
        f = REPO / "launch" / f"{name}.launch.py"
        assert f.is_file(), f"launch/{name}.launch.py missing"
        tree = ast.parse(f.read_text())
        consts = [n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                  and isinstance(n.value, ast.Constant) and any(getattr(t, "id", "") == "LAUNCH" for t in n.targets)]
        assert consts == [name]
        assert "generate_for" in f.read_text()


def test_cli_lists_subcommands_and_launch_print(capsys):
    parser = build_parser()
    help_text = parser.format_help()
    assert "launch" in help_text
    assert main(["launch", "hand", "--namespace", "left", "--print"]) == 0
    out = capsys.readouterr().out
    assert "hand_driver" in out and "sim.wrist" in out


def test_cli_rejects_bad_duration(capsys):
    assert main(["launch", "hand", "--duration", "-1"]) == 2
    assert "--duration" in capsys.readouterr().out
