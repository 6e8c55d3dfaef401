"""The node table (one function, used by `dexndm launch` and by launch/*.launch.py) and the
process supervisor that runs it without launch_ros.

The supervisor starts each node as its own process, prefixes its log lines with the node name,
forwards Ctrl-C (SIGINT) so drivers turn torque off, ends the launch with a non-zero status when
a required node dies, and stops by itself after ``--duration``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Launch arguments shared by every launch (name -> (default, help)).
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "hand": ("leap", "hand description: leap | allegro | path to a hand YAML"),
    "backend": ("sim", "hand backend: sim | dynamixel | allegro_bridge"),
    "wrist": ("palm_up", "wrist orientation (sim backend): palm_up, palm_down, base_up, base_down, thumb_up, "
                         "thumb_down, or w,x,y,z"),
    "reality": ("", "sim actuator profile: '' (ideal) or a reality profile name/path"),
    "object": ("cylinder_55", "object in the simulated hand (config/objects.yaml) or 'none'"),
    "load": ("fingertip_ball", "collect launch, sim backend: finger load: fingertip_ball (turns with the hand), "
                               "chaos_box (an open box of soft balls, fixed in the world: for one wrist pose), none"),
    "port": ("", "serial port of the Dynamixel bus (dynamixel backend)"),
    "rate": ("100.0", "hand driver rate (Hz)"),
    "namespace": ("", "namespace for every node and topic of the launch (e.g. left, right)"),
    "policy": ("", "rotation policy artifact (.pt); '' = the shipped models/policy-leap-*.pt"),
    "axis": ("z", "rotation axis: x, -y, +z or 'x,y,z' (until dexndm/rotation_axis says otherwise)"),
    "adapter": ("off", "sim-to-real adaptation: off | residual | inversion"),
    "residual": ("", "residual artifact for --adapter residual ('' = shipped models/residual-leap-*.pt)"),
    "ndm_real": ("", "finetuned NDM for --adapter inversion ('' = shipped models/ndm-leap-real-*.pt)"),
    "ndm_sim": ("", "sim-pretrained NDM for --adapter inversion ('' = shipped models/ndm-leap-sim*.pt)"),
    "wrist_backend": ("auto", "wrist node: off | sim (turns the simulated hand) | joint_trajectory | pose (an arm) "
                              "| auto (rotate launch on the sim backend: sim; otherwise off)"),
    "wrist_pose": ("", "named wrist pose the wrist node moves to at start ('' = stay where it is)"),
    "arm": ("franka_panda", "arm description for the wrist node (config/arms/<arm>.yaml or a YAML path)"),
    "teleop": ("", "gamepad teleop node: '' (none) or a controller config (config/teleop/<name>.yaml), e.g. gamepad"),
}


@dataclass(frozen=True)
class NodeSpec:
    name: str  # node name
    executable: str  # console script (`ros2 run dexndm <executable>`)
    module: str  # Python module with main(), run by the supervisor
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    required: bool = True


def _driver(args: dict[str, str], initial_pose: str | None = None) -> NodeSpec:
    backend = args["backend"]
    params: dict[str, Any] = {"hand": args["hand"], "backend": backend, "rate": float(args["rate"]),
                              "metrics_axis": args["axis"]}
    if backend == "sim":
        params.update({"sim.wrist": args["wrist"], "sim.reality": args["reality"], "sim.object": args["object"]})
        if initial_pose:
            params["sim.initial_pose"] = initial_pose
    elif backend == "dynamixel":
        # The port may also come from a --params file (dynamixel.port); without either, configure fails
        # with a message that says which device to pass.
        if args.get("port"):
            params["dynamixel.port"] = args["port"]
    elif backend == "allegro_bridge":
        # The vendor topics are absolute (/joint_states, /allegro_hand_position_controller/commands, from
        # hardware.allegro_bridge of the hand YAML), so they need no remapping and a namespace does not move
        # them. In the root namespace the driver's own joint_states would land on the vendor's /joint_states;
        # the node then publishes it on /hand_driver/joint_states (see hand_driver_node).
        from dexndm.hand.spec import load_hand_spec

        if "allegro_bridge" not in load_hand_spec(args["hand"]).hardware:
            raise ValueError(f"backend 'allegro_bridge' needs a hand with hardware.allegro_bridge (--hand allegro); "
                             f"hand '{args['hand']}' has none")
    return NodeSpec("hand_driver", "hand_driver", "dexndm.ros.hand_driver_node", params)


def _policy_path(args: dict[str, str]) -> str:
    if args["policy"]:
        return str(Path(args["policy"]).resolve())
    from dexndm.hand.sim.backend import parse_wrist
    from dexndm.policy.exported import shipped_policy

    wrist = parse_wrist(args["wrist"])
    # The shipped policy trained for this wrist and axis (the palm-up generalist when none is).
    found = shipped_policy("leap", wrist if isinstance(wrist, str) else None, args["axis"])
    if not found:
        raise ValueError("no --policy given and no shipped models/policy-leap-*.pt found")
    return found


def _rotate(args: dict[str, str]) -> list[NodeSpec]:
    from dexndm.policy.exported import PolicyLoadError, load_policy

    path = _policy_path(args)
    try:
        md = load_policy(path).metadata
    except PolicyLoadError as e:
        raise ValueError(str(e)) from e
    if md["hand"] != args["hand"]:
        raise ValueError(f"policy {path} is for hand '{md['hand']}', launch is for '{args['hand']}'")
    initial = md.get("trained_on", {}).get("initial_pose")
    if args.get("wrist_backend", "auto") == "auto":
        args = {**args, "wrist_backend": "sim" if args["backend"] == "sim" else "off"}
    # With a wrist node the policy takes the wrist orientation from dexndm/wrist_orientation only.
    policy = NodeSpec("policy", "policy", "dexndm.ros.policy_node",
                      {"policy": path, "axis": args["axis"],
                       "wrist": "" if args["wrist_backend"] != "off" else args["wrist"]})
    if args["adapter"] not in ("off", "residual", "inversion"):
        raise ValueError(f"adapter '{args['adapter']}' unknown; valid: off, residual, inversion")
    adaptation = NodeSpec("adaptation", "adaptation", "dexndm.ros.adaptation_node", {
        "hand": args["hand"], "mode": args["adapter"], "axis": args["axis"], "wrist": args["wrist"], "policy": path,
        "residual": _model(args["residual"], "residual-leap-*.pt") if args["adapter"] == "residual" else "",
        "ndm_real": _model(args["ndm_real"], "ndm-leap-real*.pt") if args["adapter"] == "inversion" else "",
        "ndm_sim": _model(args["ndm_sim"], "ndm-leap-sim*.pt") if args["adapter"] == "inversion" else "",
    })
    return [_driver(args, initial), policy, adaptation, *_wrist_nodes(args)]


def _wrist_nodes(args: dict[str, str]) -> list[NodeSpec]:
    """The wrist node (wrist_backend != off) and the teleop node (teleop != ''), for the rotate launch."""
    nodes = []
    wb = args.get("wrist_backend", "off")
    if wb == "auto":  # only the rotate launch starts a wrist node by itself
        wb = "off"
    if wb not in ("off", "sim", "joint_trajectory", "pose"):
        raise ValueError(f"wrist_backend '{wb}' unknown; valid: auto, off, sim, joint_trajectory, pose")
    if wb == "sim" and args["backend"] != "sim":
        raise ValueError(f"wrist_backend 'sim' turns the simulated hand; the hand backend is '{args['backend']}'")
    if wb != "off":
        params: dict[str, Any] = {"backend": wb, "hand": args["hand"], "pose": args.get("wrist_pose", "")}
        if wb in ("joint_trajectory", "pose"):
            arm = args.get("arm", "franka_panda")
            params["arm"] = str(Path(arm).resolve()) if arm.endswith((".yaml", ".yml")) else arm
        nodes.append(NodeSpec("wrist", "wrist", "dexndm.ros.wrist_node", params))
    if args.get("teleop"):
        ctl = args["teleop"]
        ctl = str(Path(ctl).resolve()) if ctl.endswith((".yaml", ".yml")) else ctl
        nodes.append(NodeSpec("teleop", "teleop", "dexndm.ros.teleop_node",
                              {"controller": ctl, "axis": args["axis"]}))
    return nodes


def _model(given: str, pattern: str) -> str:
    """An explicit model path, or the shipped one matching pattern ('' if none: the node reports it)."""
    from dexndm.paths import shipped_model

    return shipped_model(pattern, given)


def _collect(args: dict[str, str]) -> list[NodeSpec]:
    """Hand driver (sim: no object, fingers loaded) and wrist node, for `dexndm collect --backend ros`."""
    driver = _driver(args, "grasp")
    if args["backend"] == "sim":
        if args["load"] not in ("chaos_box", "fingertip_ball", "none"):
            raise ValueError(f"load '{args['load']}' unknown; valid: chaos_box, fingertip_ball, none")
        driver.parameters.update({"sim.object": "none", "sim.load": args["load"]})
    return [driver, *_wrist_nodes(args)]


LAUNCHES: dict[str, Callable[[dict[str, str]], list[NodeSpec]]] = {
    "hand": lambda a: [_driver(a)],
    "rotate": _rotate,
    "collect": _collect,
}


def resolve_args(overrides: dict[str, Any] | None = None) -> dict[str, str]:
    args = {k: v[0] for k, v in LAUNCH_ARGUMENTS.items()}
    for k, v in (overrides or {}).items():
        if k not in args:
            raise ValueError(f"unknown launch argument '{k}'; valid: {sorted(args)}")
        if v is not None:
            args[k] = str(v)
    if args["backend"] not in ("sim", "dynamixel", "allegro_bridge"):
        raise ValueError(f"backend '{args['backend']}' unknown; valid: sim, dynamixel, allegro_bridge")
    ns = args["namespace"].strip("/")
    if ns and not all(part.replace("_", "a").isalnum() and not part[0].isdigit() for part in ns.split("/")):
        raise ValueError(f"namespace '{args['namespace']}' is not a valid ROS namespace (letters, digits, _; "
                         "no leading digit)")
    args["namespace"] = ns
    # Fail here, before any process starts, rather than in a node a second later.
    from dexndm.hand.sim.backend import parse_wrist
    from dexndm.policy.metrics import parse_axis

    for key, check in (("axis", parse_axis), ("wrist", parse_wrist)):
        if args[key]:
            try:
                check(args[key])
            except ValueError as e:
                raise ValueError(f"--{key}: {e}") from None
    return args


def node_table(launch: str, overrides: dict[str, Any] | None = None) -> list[NodeSpec]:
    """The nodes of a launch, fully parameterised. Both launchers build from this."""
    if launch not in LAUNCHES:
        raise ValueError(f"unknown launch '{launch}'; valid: {sorted(LAUNCHES)}")
    return LAUNCHES[launch](resolve_args(overrides))


# ---- supervisor -----------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _set_pdeathsig() -> None:
    """Children get SIGINT if the supervisor dies (Linux), so a killed launcher leaves no torque on."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Supervisor:
    def __init__(self, nodes: list[NodeSpec], namespace: str = "", params_files: list[str] | None = None,
                 out=sys.stdout):
        self.nodes = nodes
        self.namespace = namespace
        self.params_files = [str(Path(p).resolve()) for p in (params_files or [])]
        for p in self.params_files:
            if not Path(p).is_file():
                raise FileNotFoundError(f"--params: file {p} does not exist")
        self.out = out
        self.procs: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="dexndm_launch_")

    def _log(self, name: str, line: str) -> None:
        with self._lock:
            self.out.write(f"[{name}] {line}")
            if not line.endswith("\n"):
                self.out.write("\n")
            self.out.flush()

    def _command(self, node: NodeSpec) -> list[str]:
        pfile = Path(self._tmp.name) / f"{node.name}.yaml"
        with open(pfile, "w") as f:
            yaml.safe_dump({"/**": {"ros__parameters": node.parameters}}, f)
        cmd = [sys.executable, "-m", node.module, "--ros-args", "-r", f"__node:={node.name}"]
        if self.namespace:
            cmd += ["-r", f"__ns:=/{self.namespace}"]
        for src, dst in node.remappings:
            cmd += ["-r", f"{src}:={dst}"]
        cmd += ["--params-file", str(pfile)]
        for p in self.params_files:  # user files last: they override
            cmd += ["--params-file", p]
        return cmd

    def start(self) -> None:
        for node in self.nodes:
            proc = subprocess.Popen(
                self._command(node), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_child_env(),
                text=True, bufsize=1, start_new_session=True, preexec_fn=_set_pdeathsig,
            )
            self.procs[node.name] = proc
            t = threading.Thread(target=self._pump, args=(node.name, proc), daemon=True)
            t.start()
            self._threads.append(t)
            self._log("launch", f"started {node.name} (pid {proc.pid}): {node.module}")

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self._log(name, line)

    def wait(self, duration: float | None = None) -> int:
        """Block until duration elapses (-> 0), Ctrl-C (-> 0) or a required node dies (-> 1)."""
        stop = threading.Event()
        signals = {}

        def handler(signum, frame):
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signals[sig] = signal.signal(sig, handler)
        deadline = None if duration is None else time.monotonic() + duration
        code = 0
        try:
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    self._log("launch", f"duration {duration:g} s elapsed; shutting down")
                    break
                dead = [(n, p.returncode) for n, p in self.procs.items() if p.poll() is not None]
                required = {n.name for n in self.nodes if n.required}
                failed = [(n, rc) for n, rc in dead if n in required]
                if failed:
                    n, rc = failed[0]
                    self._log("launch", f"required node '{n}' exited with status {rc}; shutting down")
                    code = 1
                    break
                stop.wait(0.05)
        finally:
            rc_stop = self.shutdown()
            for sig, old in signals.items():
                signal.signal(sig, old)
        return code or rc_stop

    def shutdown(self, timeout: float = 10.0) -> int:
        """SIGINT every node (drivers turn torque off), escalate if they do not exit. Returns 0 if
        all exited by themselves."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        code = 0
        for name, p in self.procs.items():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._log("launch", f"{name} did not stop within {timeout:g} s after SIGINT; terminating")
                p.terminate()
                try:
                    p.wait(3)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                code = 1
        for t in self._threads:
            t.join(timeout=2)
        self._tmp.cleanup()
        return code
