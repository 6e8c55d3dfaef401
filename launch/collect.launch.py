"""ros2 launch dexndm collect.launch.py [backend:=sim] [wrist_backend:=sim] [load:=chaos_box] ...

Hand driver (sim: no object, fingers loaded) and wrist node for `dexndm collect --backend ros
--wrists palm_up,palm_down ...`. Builds launch_ros Nodes from the same node table as
`dexndm launch collect`.
"""

from dexndm.ros.launch_description import generate_for

LAUNCH = "collect"


def generate_launch_description():
    return generate_for(LAUNCH)
