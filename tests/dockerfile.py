"""The Dockerfile read without a Docker engine: its stages and their instructions, for the
tests of the image and of the deploy manifests that must agree with it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
# Where the image carries its config (Kubernetes mounts the real one over this directory).
CONFIG_DIR = "/etc/ensemble-extproc"
CONFIG_PATH = f"{CONFIG_DIR}/config.yaml"


class Stage:
    def __init__(self, base: str, name: str) -> None:
        self.base, self.name = base, name
        self.instructions: list[tuple[str, str]] = []

    def values(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]

    @property
    def user(self) -> str:
        users = self.values("USER")
        assert users, f"stage {self.name} sets no USER"
        return users[-1]


def dockerfile_instructions() -> Iterator[tuple[str, str]]:
    """(KEYWORD, arguments) with continuation lines joined and comments dropped."""
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        pending = ""
        yield keyword.upper(), rest.strip()


def dockerfile_stages() -> list[Stage]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            stages.append(Stage(base, parts[2] if len(parts) > 2 else str(len(stages))))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages
