import os

import pytest
import torch

from ifhe.cpu import machine_label
from ifhe.machine import calibrate, calibration_seconds, machine_info, relative_difference, same_machine


def test_machine_info_names_the_machine():
    info = machine_info()
    assert info["cpu_model"] and isinstance(info["cpu_model"], str)
    assert info["logical_cores"] == os.cpu_count()
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["torch"] == torch.__version__
    assert {"avx2", "avx512", "avx512_bf16", "cuda_device"} <= set(info)
    label = machine_label(info, threads=1)
    assert info["cpu_model"] in label and "cores" in label and label.endswith("1 thread")
    assert machine_label(None) == "machine not recorded"


def test_calibrate_is_cheap_and_leaves_no_trace():
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    cal = calibrate(threads=1, repeats=1, warmup=0)
    assert torch.equal(torch.rand(3), expected)  # global RNG untouched
    assert torch.get_num_threads() == threads
    assert cal["threads"] == 1 and cal["batch"] == 128 and cal["arch"] == "wrn16_2" and cal["precision"] == "fp32"
    assert 0 < cal["step_s"] < 60 and cal["wall_s"] > 0 and len(cal["steps"]) == 1
    assert calibration_seconds(cal) == cal["step_s"]


def test_same_machine_within_tolerance():
    assert same_machine(1.0, 1.0)
    assert same_machine(1.0, 1.2) and same_machine(1.2, 1.0)      # 20% apart: still one machine
    assert not same_machine(1.0, 1.21) and not same_machine(1.21, 1.0)
    assert same_machine(1.0, 1.3, tolerance=0.3)
    assert same_machine({"step_s": 0.27}, {"step_s": 0.30})
    assert not same_machine({"step_s": 0.27}, {"step_s": 1.0})    # the 3.5x slower AVX2 box
    assert not same_machine(None, 1.0) and not same_machine({}, {"step_s": 1.0})
    assert relative_difference(1.0, 1.5) == pytest.approx(0.5)
    assert relative_difference(None, 1.0) == float("inf")
    assert calibration_seconds(float("nan")) is None and calibration_seconds(0) is None
