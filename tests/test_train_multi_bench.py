"""bench/train_multi_gpu.py without GPUs: its arguments, its refusal on a machine with fewer than 2, and the
arithmetic of its figures (steady tokens/s from a run's metrics, ratios within each adjacent pair)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import load_script

BENCH = Path(__file__).resolve().parent.parent / "bench" / "train_multi_gpu.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH, "train_multi_gpu_bench")


def test_arguments(bench):
    args = bench.parse_args([])
    assert args.runs == [1, 2, 2, 1] and args.rows == (200, 1000) and args.warm == 3
    assert args.config["batch_size"] * args.config["grad_accum"] == 8 and args.config["max_steps"] == 12
    assert args.config["backend"] == "transformers" and args.config["parallel"] == "ddp"
    args = bench.parse_args(["--runs", "2,1", "--steps", "6", "--set", "load_in_4bit=false", "--parallel", "fsdp"])
    assert args.runs == [2, 1] and args.config["load_in_4bit"] is False and args.config["parallel"] == "fsdp"
    assert args.config["max_steps"] == 6


@pytest.mark.parametrize("argv", [["--runs", "2,2"], ["--runs", "1,x"], ["--steps", "4", "--warm", "3"],
                                  ["--steps", "30", "--rows", "100,500"], ["--set", "no_such_setting=1"]])
def test_bad_arguments_stop_with_a_message(bench, argv, capsys):
    with pytest.raises(SystemExit) as stop:
        bench.parse_args(argv)
    assert stop.value.code != 0


@pytest.mark.torch
def test_refuses_to_run_without_two_gpus(bench):
    found = bench.gpu_count()
    if found >= 2:
        pytest.skip("this machine has 2 GPUs: the bench would run")
    with pytest.raises(SystemExit, match=f"needs 2 CUDA GPUs, found {found}"):
        bench.main(["--work", "/nonexistent/never-made"])
    with pytest.raises(SystemExit, match="needs 4 CUDA GPUs, found 3"):
        bench.check_gpus(bench.parse_args(["--runs", "1,2,4"]), 3)


def test_steady_tokens_per_second_leaves_out_the_warm_up(bench):
    elapsed = {1: 30.0, 2: 40.0, 3: 42.0, 4: 44.0, 5: 46.0, 6: 48.0}  # 2 slow steps, then 2 s a step
    metrics = [{"step": s, "tokens": 8000 * s, "elapsed_s": elapsed[s], "memory_mb": 1024.0 * s,
                "loss": 5.0 - s / 10} for s in range(1, 7)]
    metrics.insert(3, {"step": 3, "eval_loss": 4.0})  # eval lines carry no tokens
    figures = bench.steady(metrics, warm=2)
    assert figures["steady_tokens_per_s"] == 4000.0  # (48,000 - 16,000) tokens / (48 - 40) s
    assert bench.steady(metrics, warm=1)["steady_tokens_per_s"] == round(40000 / 18, 1)
    assert figures["steps"] == 6 and figures["peak_memory_gib_rank0"] == 6.0 and figures["final_loss"] == 4.4


def test_ratios_divide_within_each_adjacent_pair(bench):
    runs = [{"gpus": 1, "steady_tokens_per_s": 1000.0}, {"gpus": 2, "steady_tokens_per_s": 1900.0},
            {"gpus": 2, "steady_tokens_per_s": 1700.0}, {"gpus": 1, "steady_tokens_per_s": 1100.0}]
    assert bench.ratios(runs) == [1.9, round(1700 / 1100, 3)]  # (1, 2) and (2, 1); the (2, 2) pair is no ratio
    assert bench.ratios([runs[0], {"gpus": 2, "ok": False}]) == []
