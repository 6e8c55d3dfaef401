"""ros2 launch dexndm hand.launch.py [hand:=leap] [backend:=sim] [wrist:=palm_up] [namespace:=left] ...

Builds launch_ros Nodes from the same node table as `dexndm launch hand`.
"""

from dexndm.ros.launch_description import generate_for

LAUNCH = "hand"


def generate_launch_description():
    return generate_for(LAUNCH)
