"""Device checks (`latte.devices`, behind `--device`, `device_map` and CPU offload) as a machine with two CUDA
devices would give them (faked here)."""

import pytest
import torch

from latte.cli.arguments import check_device as check_cli_device
from latte.devices import available_devices, check_device
from latte.models.placement import component_devices


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cuda_devices_are_listed_and_chosen_by_default(two_gpus):
    assert available_devices()[:4] == ["cpu", "cuda", "cuda:0", "cuda:1"]
    assert check_cli_device(None) == "cuda" and check_cli_device("cuda:1") == "cuda:1"


@pytest.mark.parametrize("device", ["cuda:2", "cuda:7", "tpu", "meta", "CPU", ""])
def test_other_devices_name_the_value_and_the_allowed_ones(two_gpus, device):
    with pytest.raises(ValueError, match=rf"^--device '{device}': not a device of this machine; allowed here: "
                       "cpu, cuda, cuda:0, cuda:1$"):
        check_cli_device(device)


def test_names_indexes_and_torch_devices_are_taken(two_gpus):
    assert check_device(1, "device_map") == torch.device("cuda", 1)  # an index is a CUDA device
    assert check_device(torch.device("cuda", 0), "x") == torch.device("cuda", 0)
    assert check_device("cpu:0", "x").type == "cpu"
    assert component_devices({"vae": 0, "transformer": "cpu"}, {"vae": 1, "transformer": 2}) == {
        "vae": torch.device("cuda", 0), "transformer": torch.device("cpu")}


@pytest.mark.parametrize(("value", "what", "shown"), [
    (torch.device("cuda", 2), "enable_model_cpu_offload device", "'cuda:2'"),
    (2, "device_map", "2"),
    (True, "device_map", "True"),
    (1.5, "device_map", "1.5"),
])
def test_every_caller_gets_the_same_one_line_message(two_gpus, value, what, shown):
    with pytest.raises(ValueError, match=rf"^{what} {shown}: not a device of this machine; allowed here: cpu, cuda, "
                       r"cuda:0, cuda:1$"):
        check_device(value, what)


def test_device_map_names_the_component_and_its_other_values(two_gpus):
    with pytest.raises(ValueError, match=r"^device_map\['vae'\] 'cuda:5': not a device of this machine; allowed here: "
                       r"cpu, cuda, cuda:0, cuda:1$"):
        component_devices({"vae": "cuda:5"}, {"vae": 1})
    with pytest.raises(ValueError, match=r"^device_map 'nowhere': not a device of this machine; allowed here: cpu, "
                       r"cuda, cuda:0, cuda:1, or \"balanced\" or \"auto\" .* or a dict \{component: device\}$"):
        component_devices("nowhere", {"vae": 1})


def test_a_missing_accelerator_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^--device 'cuda:0': no CUDA device is available here; allowed here: "):
        check_cli_device("cuda:0")
