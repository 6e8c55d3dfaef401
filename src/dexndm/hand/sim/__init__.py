"""MuJoCo simulation of the hand: scene building, actuator profiles and the `sim` Hand backend."""
