"""The README's two set-up commands: one runs the stack, one runs the tests, and CI runs the latter."""

import re
from pathlib import Path

from dexndm.hand.sim.profiles import schema_markdown

REPO = Path(__file__).resolve().parents[1]


def _setup_commands():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [b.strip() for b in blocks if b.strip().startswith("python3 -m venv .venv")]


def test_exactly_two_setup_commands_and_ci_runs_the_test_one():
    cmds = _setup_commands()
    assert len(cmds) == 2, cmds
    main, tests = cmds
    assert "dexndm launch rotate" in main and "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci, ".ci/run must run the README's test command verbatim"
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in ci


def test_readme_documents_the_reality_profile_schema():
    assert schema_markdown() in (REPO / "README.md").read_text()
