"""The generated code in src/ensemble_extproc/_pb must match what protos/ generates today."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATOR = REPO_ROOT / "tools" / "gen_protos.py"
FIX = "run `make protos` to regenerate"


def _load_generator() -> ModuleType:
    # tools/ is not a package: load the script as a module by path.
    spec = importlib.util.spec_from_file_location("gen_protos", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_protos = _load_generator()


def _installed_dir() -> Path:
    try:
        import ensemble_extproc._pb as pb
    except ImportError as exc:
        pytest.fail(f"generated code is not importable ({exc}); {FIX}")
    return Path(pb.__file__).parent


def _sources(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(root.rglob("*"))
        if path.suffix in {".py", ".pyi"} and path.is_file()
    }


@pytest.fixture(scope="module")
def fresh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fresh") / "_pb"
    gen_protos.generate(out)
    return out


def test_generated_code_matches_protos(fresh_dir: Path) -> None:
    installed_dir = _installed_dir()
    fresh = _sources(fresh_dir)
    installed = _sources(installed_dir)
    assert fresh, "the generator produced no Python files"
    stale = sorted(
        name for name in fresh.keys() | installed.keys() if fresh.get(name) != installed.get(name)
    )
    assert not stale, (
        f"{installed_dir} is stale against protos/: {stale} differ "
        f"(changed, missing, or no longer generated); {FIX}"
    )


def test_generated_imports_stay_inside_the_package(fresh_dir: Path) -> None:
    sources = _sources(fresh_dir)
    assert "envoy/service/ext_proc/v3/external_processor_pb2.py" in sources
    assert "envoy/service/ext_proc/v3/external_processor_pb2_grpc.pyi" in sources
    assert "envoy/config/core/v3/__init__.py" in sources
    top_level_envoy = re.compile(r"^\s*(?:from|import) envoy\b", re.MULTILINE)
    offenders = sorted(name for name, text in sources.items() if top_level_envoy.search(text))
    assert not offenders, f"imports of the top-level `envoy` package in {offenders}"
    service = sources["envoy/service/ext_proc/v3/external_processor_pb2.py"]
    assert "from ensemble_extproc._pb.envoy.config.core.v3 import base_pb2 as " in service
    assert "'ensemble_extproc._pb.envoy.service.ext_proc.v3.external_processor_pb2'" in service


def test_failed_run_keeps_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "_pb"
    gen_protos.generate(out)
    before = _sources(out)

    broken = tmp_path / "protos"
    broken.mkdir()
    (broken / "broken.proto").write_text('syntax = "proto3";\nmessage {\n', encoding="utf-8")
    with pytest.raises(gen_protos.GenerationError, match="protoc failed"):
        gen_protos.generate(out, proto_root=broken)

    assert _sources(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_pb", "protos"], "temp dirs left"


def test_refuses_to_replace_a_directory_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "src"
    precious.mkdir()
    (precious / "__init__.py").write_text('"""Real code."""\n', encoding="utf-8")
    with pytest.raises(gen_protos.GenerationError, match="refusing to replace"):
        gen_protos.generate(precious)
    assert (precious / "__init__.py").read_text(encoding="utf-8") == '"""Real code."""\n'


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "_pb"
    assert gen_protos.main(["--out", str(out)]) == 0
    assert (out / "envoy" / "service" / "ext_proc" / "v3" / "external_processor_pb2.py").is_file()
    assert "wrote" in capsys.readouterr().out
