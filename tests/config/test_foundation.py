"""The project's plumbing: strict config validation, overrides, atomic writes, the CLI's error path."""

from __future__ import annotations

from pathlib import Path

import pytest

from steer_bench import files
from steer_bench.cli import main
from steer_bench.config import StrictModel, apply_overrides, load_model
from steer_bench.errors import SteerBenchError


class Optim(StrictModel):
    lr: float
    weight_decay: float = 0.0


class Run(StrictModel):
    name: str
    optim: Optim


def test_unknown_key_names_the_key_and_the_valid_ones(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: x\noptim: {lr: 1.0e-3, weight_decy: 0.1}\n")
    with pytest.raises(SteerBenchError) as e:
        load_model(Run, cfg)
    msg = str(e.value)
    assert "optim.weight_decy" in msg
    assert "did you mean 'weight_decay'" in msg
    assert "lr, weight_decay" in msg
    assert str(cfg) in msg


def test_overrides_are_parsed_as_yaml_and_nested() -> None:
    out = apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=3e-5", "name=abc", "new.section=[1, 2]"])
    assert out == {"optim": {"lr": 3e-5}, "name": "abc", "new": {"section": [1, 2]}}


def test_wrong_type_is_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: x\noptim: {lr: fast}\n")
    with pytest.raises(SteerBenchError, match=r"optim\.lr"):
        load_model(Run, cfg)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SteerBenchError, match="not found"):
        load_model(Run, tmp_path / "nope.yaml")


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    files.write_json(target, {"a": 1})

    def crash() -> None:
        with files.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        crash()
    assert '"a": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_replaces_whole_directory(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    with files.atomic_dir(d) as tmp:
        (tmp / "a.txt").write_text("1")
    with files.atomic_dir(d) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in d.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_cli_unknown_subcommand_exits_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2


class Study(StrictModel):
    settings: dict[str, Optim]


def test_unknown_key_inside_a_dict_of_sections_lists_valid_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "study.yaml"
    cfg.write_text("settings: {dense: {lr: 1.0, weight_decy: 0.1}}\n")
    with pytest.raises(SteerBenchError, match=r"settings\.dense\.weight_decy.*valid keys here: lr, weight_decay"):
        load_model(Study, cfg)
