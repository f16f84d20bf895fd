"""`latte.cli.arguments`: the device list as a machine with two CUDA devices would give it (faked here)."""

import pytest
import torch

from latte.cli.arguments import available_devices, check_device


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cuda_devices_are_listed_and_chosen_by_default(two_gpus):
    assert available_devices()[:4] == ["cpu", "cuda", "cuda:0", "cuda:1"]
    assert check_device(None) == "cuda" and check_device("cuda:1") == "cuda:1"


@pytest.mark.parametrize("device", ["cuda:2", "cuda:7", "tpu", "meta", "CPU", ""])
def test_other_devices_name_the_value_and_the_allowed_ones(two_gpus, device):
    with pytest.raises(ValueError, match=rf"--device '{device}': not a device of this machine; allowed here: "
                       "cpu, cuda, cuda:0, cuda:1"):
        check_device(device)
