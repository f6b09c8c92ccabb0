"""The README's two commands are the project's entry points; CI must run the test one verbatim."""

import re

from support import ROOT


def readme_commands():
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    serve, test = readme_commands()
    assert "faast build kernels/facile" in serve and "faast serve" in serve and "--grpc-port 8001" in serve
    assert test.rstrip().endswith("pytest")
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines
