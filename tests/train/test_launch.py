"""How the entry point is started: arguments from the Airflow form, torchrun for several GPUs, results."""

from __future__ import annotations

import argparse
import sys

import pytest

from tasks.cli import build_parser
from tasks.train.launch import (
    add_arguments,
    challenger_extra,
    docker_size_bytes,
    parse_result,
    relaunch_command,
    trainer_arguments,
)


def test_form_params_become_entry_point_arguments_and_empty_fields_are_ignored():
    argv = trainer_arguments(
        {
            "profile": "",
            "snapshot": "v0002",
            "epochs": 4,
            "learning_rate": None,
            "lora_r": 8,
            "reason": "new generator",
        }
    )
    assert argv == ["--snapshot", "v0002", "--epochs", "4", "--lora-r", "8", "--reason", "new generator"]
    args = add_arguments(argparse.ArgumentParser()).parse_args(
        ["--epochs", "", "--profile", "", "--lora-r", "8"]
    )
    assert (args.epochs, args.profile, args.lora_r) == (None, None, 8)


def test_vigil_has_train_and_evaluate():
    parser = build_parser()
    args = parser.parse_args(["train", "--epochs", "3", "--reason", "why"])
    assert (args.command, args.epochs, args.reason) == ("train", 3, "why")
    args = parser.parse_args(
        ["evaluate", "--model", "models:/vigil-detector@champion", "--data", "v0001", "--json"]
    )
    assert (args.command, args.split, args.json) == ("evaluate", "test", True)


def test_several_gpus_relaunch_under_torchrun():
    command = relaunch_command(["--epochs", "2"], 4)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=4" in command and command[-4:] == ["-m", "tasks.train", "--epochs", "2"]


def test_docker_sizes():
    assert docker_size_bytes("8g") == 8 * 1024**3 and docker_size_bytes("512m") == 512 * 1024**2
    assert docker_size_bytes("1024") == 1024
    with pytest.raises(ValueError, match="invalid size '8 gigs'"):
        docker_size_bytes("8 gigs")


def test_results_are_parsed_from_the_last_line_and_checked():
    line = '{"model_name": "vigil-detector", "version": "3", "snapshot": "v0002"}'
    assert challenger_extra(f"log line\n{line}\n")["version"] == "3"
    with pytest.raises(RuntimeError, match="not its JSON result"):
        parse_result("training...\nKilled")
    with pytest.raises(RuntimeError, match=r"lacks \['version'\]"):
        challenger_extra({"model_name": "vigil-detector"})
