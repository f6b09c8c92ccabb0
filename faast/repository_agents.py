"""Triton's model repository agents, as faast runs them before a model loads.

faast runs the one agent SONIC deployments use, `checksum`: config.pbtxt's
`model_repository_agents { agents [ { name: "checksum", parameters { key: "MD5:1/kernel.json"
value: "<md5 hex>" } } ] }` pins each artifact's MD5, and a file that changed since fails that
model's load with the reason, in the checksum agent's words. `faast build` writes the checksums.
"""

import hashlib
from pathlib import Path

from .protocol import model_config as mc

CHECKSUM = "checksum"


class RepositoryAgentError(Exception):
    """An agent refused the model; the message says why."""


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def add_checksums(config: mc.ModelConfig, model_dir: Path, files: list[Path]) -> None:
    """Pin the MD5 of each of `files` (inside `model_dir`) in `config`'s checksum agent."""
    agent = config.model_repository_agents.agents.add(name=CHECKSUM)
    for path in sorted(files):
        agent.parameters[f"MD5:{path.relative_to(model_dir).as_posix()}"] = md5_of(path)


def run_agents(config: mc.ModelConfig, model_dir: Path) -> None:
    """Run the agents `config` names on `model_dir`; raises RepositoryAgentError when one refuses."""
    for agent in config.model_repository_agents.agents:
        if agent.name != CHECKSUM:
            raise RepositoryAgentError(f"unknown repository agent '{agent.name}': faast runs '{CHECKSUM}' only")
        for key, expected in sorted(agent.parameters.items()):
            _check(model_dir, key, expected)


def _check(model_dir: Path, key: str, expected: str) -> None:
    algorithm, colon, relative = key.partition(":")
    if not colon:
        raise RepositoryAgentError(f"failed to parse key: {key}")
    if algorithm.lower() != "md5":
        raise RepositoryAgentError(f"Unsupported checksum algorithm: {algorithm}")
    path = (model_dir / relative).resolve()
    if not path.is_relative_to(model_dir.resolve()):
        raise RepositoryAgentError(f"failed to open text file for read {relative}: outside the model's folder")
    try:
        got = md5_of(path)
    except OSError as error:
        raise RepositoryAgentError(f"failed to open text file for read {relative}: {error.strerror}") from None
    if got != expected:
        raise RepositoryAgentError(f"Mismatched MD5 hash for file {relative}, expect: {expected}, got: {got}")
