"""How many processes ``run`` starts by default, and the replica flags."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
import yaml

from ensemble_extproc.cli import main
from ensemble_extproc.cpus import quota_cpus, usable_cpus

from helpers import free_port


@pytest.mark.parametrize(
    ("v2", "v1_quota", "v1_period", "cpus"),
    [
        ("max 100000\n", None, None, None),
        ("200000 100000\n", None, None, 2.0),
        ("50000 100000\n", None, None, 0.5),
        (None, "-1\n", "100000\n", None),
        (None, "150000\n", "100000\n", 1.5),
        (None, None, None, None),
    ],
)
def test_the_cgroup_cpu_limit(
    v2: str | None, v1_quota: str | None, v1_period: str | None, cpus: float | None
) -> None:
    assert quota_cpus(v2, v1_quota, v1_period) == cpus


def test_usable_cpus_are_those_this_process_may_run_on() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def clusters(tmp_path: Path, *args: str) -> dict[str, int]:
    config = tmp_path / "c.yaml"
    listen = {k: f"127.0.0.1:{free_port()}" for k in ("envoy", "envoy_admin", "extproc")}
    config.write_text(
        yaml.safe_dump(
            {"models": [{"name": "m", "url": "http://127.0.0.1:1/v1"}], "listen": listen}
        )
    )
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["envoy-config", "--config", str(config), *args]) == 0
    rendered = yaml.safe_load(buffer.getvalue())
    return {
        c["name"]: len(c["load_assignment"]["endpoints"][0]["lb_endpoints"])
        for c in rendered["static_resources"]["clusters"]
        if c["name"] in ("ensemble_extproc", "ensemble_upstream")
    }


def test_envoy_config_renders_one_of_each_unless_told(tmp_path: Path) -> None:
    assert clusters(tmp_path) == {"ensemble_extproc": 1, "ensemble_upstream": 1}
    assert clusters(tmp_path, "--extproc-replicas", "3") == {
        "ensemble_extproc": 3,
        "ensemble_upstream": 1,
    }
    cpus = usable_cpus()
    assert clusters(tmp_path, "--extproc-replicas", "auto", "--upstream-replicas", "auto") == {
        "ensemble_extproc": cpus,
        "ensemble_upstream": cpus,
    }


@pytest.mark.parametrize("value", ["0", "-1", "many", ""])
def test_a_bad_replica_count_is_refused(
    tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--config", str(tmp_path / "none.yaml"), "--extproc-replicas", value])
    assert exit_.value.code == 2
    assert "--extproc-replicas" in capsys.readouterr().err
