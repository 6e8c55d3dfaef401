"""Wrist orientation and rotation-axis teleoperation, without ROS.

poses: named hand orientations, orientation limits, bounded-speed slerp, source freshness.
kinematics: rotations, quaternions, URDF forward kinematics (numpy), offline IK.
arm: arm descriptions (config/arms/*.yaml) and stored named poses.
backends: the wrist node's logic per backend (sim, joint_trajectory, pose).
teleop: gamepad -> rotation axis and dead-man enable (config/teleop/*.yaml).
"""
