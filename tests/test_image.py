"""The image (Dockerfile), read without a Docker engine: hash-pinned dependencies from
lock files that cover pyproject.toml, a HEALTHCHECK that our CLI runs, and EXPOSE equal to
the ports of the config the image carries."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from dockerfile import CONFIG_PATH, ROOT, Stage, dockerfile_stages
from ensemble_extproc.cli import _parser
from ensemble_extproc.config import load_config

LOCK = ROOT / "requirements" / "lock.txt"
BUILD_IN = ROOT / "requirements" / "build.in"
BUILD_LOCK = ROOT / "requirements" / "build-lock.txt"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^ \\]+)")


def locked(path: Path) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes), every entry pinned with hashes."""
    entries: dict[str, tuple[Version, int]] = {}
    name = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = PIN.match(stripped)
        if match:
            name = canonicalize_name(match.group(1))
            entries[name] = (Version(match.group(2)), 0)
            continue
        assert stripped.startswith("--hash=sha256:"), f"{path.name}: not a pin: {line!r}"
        assert name is not None, f"{path.name}: a hash before the first pin"
        version, hashes = entries[name]
        entries[name] = (version, hashes + 1)
    for name, (_, hashes) in entries.items():
        assert hashes, f"{path.name}: {name} has no hash"
    return entries


# Extras the image carries: tracing is turned on by config alone, with no image rebuild.
IMAGE_EXTRAS = ("otel",)


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [text for extra in IMAGE_EXTRAS for text in project["optional-dependencies"][extra]]
    return [Requirement(text) for text in [*project["dependencies"], *extras]]


def runs(stage: Stage) -> str:
    return "\n".join(stage.values("RUN"))


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    lock = locked(LOCK)
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} is not in {LOCK.name}: run `make lock`"
        version, _ = lock[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}=={version} in {LOCK.name} does not satisfy {requirement}: run `make lock`"
        )


def test_the_lock_holds_what_the_locked_packages_require() -> None:
    """Each locked package's own requirements are locked too, read from the metadata of the
    installed copy where it is the locked version (the image's `pip check` sees the rest)."""
    lock = locked(LOCK)
    checked = 0
    for name, (version, _) in lock.items():
        try:
            installed = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(installed.version) != version:
            continue
        checked += 1
        for text in installed.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            assert canonicalize_name(requirement.name) in lock, (
                f"{name} requires {requirement}, missing from {LOCK.name}: run `make lock`"
            )
    assert checked >= len(runtime_requirements())


def test_the_build_lock_pins_the_build_stage_like_the_runtime() -> None:
    build = locked(BUILD_LOCK)
    for line in BUILD_IN.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            assert name in build, f"{name} is not in {BUILD_LOCK.name}: run `make lock`"
            assert requirement.specifier.contains(build[name][0], prereleases=True)
    # The gRPC code generated in the build stage runs on the runtime's protobuf and grpcio.
    runtime = locked(LOCK)
    for name in ("protobuf", "grpcio"):
        assert build[name][0] == runtime[name][0], f"{name}: build and runtime locks differ"


def test_the_dockerfile_installs_only_hash_checked_dependencies() -> None:
    stages = dockerfile_stages()
    build, runtime = stages[0], stages[-1]
    assert "requirements/build-lock.txt" in " ".join(build.values("COPY"))
    assert "pip install --require-hashes --no-deps -r /tmp/build-lock.txt" in runs(build)
    assert "--no-build-isolation" in runs(build), "the pinned setuptools builds the wheel"
    install = runs(runtime)
    assert "source=requirements/lock.txt,target=/tmp/lock.txt" in install
    assert "pip install --require-hashes --no-deps -r /tmp/lock.txt" in install
    # Our own wheel, built in the first stage, without resolving anything more.
    assert "pip install --no-deps /wheels/*.whl" in install
    assert "pip check" in install
    for stage in stages:
        for run in stage.values("RUN"):
            for command in re.findall(r"pip install ([^&]*)", run):
                assert "--no-deps" in command, f"unpinned install: pip install {command}"
    assert (ROOT / "requirements" / "lock.txt").exists()


def test_expose_is_the_ports_of_the_config_in_the_image() -> None:
    runtime = dockerfile_stages()[-1]
    (copy,) = [v for v in runtime.values("COPY") if v.endswith(f" {CONFIG_PATH}")]
    listen = load_config(ROOT / copy.split()[0]).listen
    exposed = {int(port) for value in runtime.values("EXPOSE") for port in value.split()}
    assert exposed == {
        listen.extproc.port,
        listen.extproc_metrics.port,
        listen.upstream.port,
    }


def test_the_healthcheck_is_our_cli_command() -> None:
    (healthcheck,) = dockerfile_stages()[-1].values("HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert {"--interval", "--timeout", "--start-period", "--retries"} <= {
        option.partition("=")[0] for option in options.split()
    }
    argv = json.loads(command)
    assert argv[:2] == ["ensemble-extproc", "healthcheck"]
    args = _parser().parse_args(argv[1:])  # the image's CLI accepts these arguments
    assert args.command == "healthcheck"
    assert args.part == [], "no part named: it checks the server the container runs"
