"""launch_ros glue: turn a node table into a LaunchDescription (used by launch/*.launch.py).

Imported only under `ros2 launch`; `launch`/`launch_ros` are not needed anywhere else.
"""

from __future__ import annotations

from dexndm.ros.bringup import LAUNCH_ARGUMENTS, node_table


def generate_for(launch_name: str):
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
    from launch.substitutions import EnvironmentVariable, LaunchConfiguration

    from launch import LaunchDescription

    def _nodes(context, *args, **kwargs):
        from launch.actions import EmitEvent, RegisterEventHandler
        from launch.event_handlers import OnProcessExit
        from launch.events import Shutdown
        from launch_ros.actions import Node

        values = {k: LaunchConfiguration(k).perform(context) for k in LAUNCH_ARGUMENTS}
        ns = values["namespace"].strip("/")
        actions = []
        for spec in node_table(launch_name, values):
            node = Node(
                package="dexndm",
                executable=spec.executable,
                name=spec.name,
                namespace=ns or None,
                parameters=[spec.parameters],
                remappings=list(spec.remappings),
                output="screen",
            )
            actions.append(node)
            if spec.required:
                actions.append(RegisterEventHandler(OnProcessExit(
                    target_action=node, on_exit=[EmitEvent(event=Shutdown(reason=f"{spec.name} exited"))])))
        return actions

    decl = [DeclareLaunchArgument(k, default_value=v[0], description=v[1]) for k, v in LAUNCH_ARGUMENTS.items()]
    env = SetEnvironmentVariable(
        "ROS_AUTOMATIC_DISCOVERY_RANGE", EnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", default_value="LOCALHOST")
    )
    return LaunchDescription([env, *decl, OpaqueFunction(function=_nodes)])
