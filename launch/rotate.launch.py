"""ros2 launch dexndm rotate.launch.py [backend:=sim] [wrist:=palm_up] [axis:=z] [policy:=PATH] ...

Builds launch_ros Nodes from the same node table as `dexndm launch rotate`.
"""

from dexndm.ros.launch_description import generate_for

LAUNCH = "rotate"


def generate_launch_description():
    return generate_for(LAUNCH)
