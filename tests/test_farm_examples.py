"""farm-examples.yaml: the real boards' targets build with labgrid's own resources
and drivers (no hardware needed to build them), agree with their board profiles,
and `xenlab doctor` passes on each profile. bench.yaml and remote.yaml load too.
"""

import ipaddress
import re
import subprocess
import warnings

import pytest
from labgrid import Environment
from labgrid.factory import target_factory

from support.farmlab import REPO
from xenlab.plan.profile import load_profile

EXAMPLES = REPO / "farm-examples.yaml"
BOARDS = ["rpi4", "zcu102", "juno-r2", "cubieboard2"]


@pytest.fixture(scope="module")
def env():
    return Environment(str(EXAMPLES))


def _entries(section):
    """(class, args) of a resources/drivers section, dict or list form."""
    items = section.items() if isinstance(section, dict) else \
        (next(iter(e.items())) for e in section)
    return [((args or {}).get("cls", name), args or {}) for name, args in items]


def test_every_profile_has_an_example(env):
    targets = env.config.get_targets()
    assert sorted(t["options"]["xenlab_board"] for t in targets.values()) == sorted(BOARDS)


@pytest.mark.parametrize("name", BOARDS)
def test_classes_exist_in_labgrid(env, name):
    data = env.config.get_targets()[name]
    for cls, _ in _entries(data["resources"]):
        assert cls in target_factory.resources, f"{name}: no labgrid resource {cls}"
    for cls, _ in _entries(data["drivers"]):
        assert cls in target_factory.drivers, f"{name}: no labgrid driver {cls}"


@pytest.mark.parametrize("name", BOARDS)
def test_target_builds_without_hardware(env, name):
    # labgrid only warns about (and drops) a misspelt key: make that an error here.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        target = env.get_target(name)
    strategy = target.get_driver("XenStrategy", activate=False)
    assert strategy.console is target.get_driver("SerialDriver", activate=False)
    assert strategy.power is not None and strategy.uboot is not None


@pytest.mark.parametrize("name", BOARDS)
def test_target_agrees_with_its_profile(env, name):
    target = env.get_target(name)
    strategy = target.get_driver("XenStrategy", activate=False)
    profile = load_profile(env.config.get_targets()[name]["options"]["xenlab_board"])
    assert strategy.uboot.prompt == profile.uboot.prompt
    assert strategy.uboot.autoboot == profile.uboot.autoboot
    if profile.load_command.startswith("tftp"):
        # A TFTP board needs the provider and the lab's server address for U-Boot.
        assert strategy.tftp is not None, f"{name} loads over TFTP: needs TFTPProviderDriver"
        assert strategy.tftp.provider.internal.endswith("/")
        ipaddress.IPv4Address(strategy.tftp_server)
    else:
        assert strategy.tftp is None, f"{name} loads from storage: a TFTP provider is unused"


@pytest.mark.parametrize("name", BOARDS + ["qemu-bench-arm64"])
def test_doctor_passes_on_the_profile(name):
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "xenlab"), "doctor", name], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(r"^0 error\(s\)", proc.stdout, re.M), proc.stdout


@pytest.mark.parametrize("env_file,extra", [
    ("bench.yaml", {}),
    ("remote.yaml", {"LG_PLACE": "bench-arm64"}),
])
def test_bench_env_files_load(monkeypatch, tmp_path, env_file, extra):
    for key, value in {"LG_BENCH_SERIAL": "127.0.0.1:20556", "LG_BENCH_UART": "127.0.0.1:20555",
                       "LG_BENCH_STATE": str(tmp_path),
                       "LG_BENCH_TFTP_DIR": str(tmp_path / "tftp"),
                       "LG_BENCH_TFTP_ADDR": "127.0.0.1", **extra}.items():
        monkeypatch.setenv(key, value)
    env = Environment(str(REPO / env_file))
    data = env.config.get_targets()["bench-arm64"]
    assert data["options"]["xenlab_board"] == "qemu-bench-arm64"
    drivers = dict(_entries(data["drivers"]))
    assert drivers["XenStrategy"] == {"tftp_server": "127.0.0.1", "console_after_power": True}
    assert "--serial 127.0.0.1:20555" in drivers["ExternalPowerDriver"]["cmd_on"]
    if env_file == "bench.yaml":  # remote.yaml's UART comes from the place
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            target = env.get_target("bench-arm64")
        power = target.get_driver("ExternalPowerDriver", activate=False)
        assert "bench-qemu on" in power.cmd_on


def test_bench_env_needs_its_variables(monkeypatch):
    for key in ("LG_BENCH_SERIAL", "LG_BENCH_UART", "LG_BENCH_STATE", "LG_BENCH_TFTP_DIR",
                "LG_BENCH_TFTP_ADDR"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(Exception, match="unknown variable 'LG_BENCH"):
        Environment(str(REPO / "bench.yaml"))
