"""The documented default configuration files in config/ name every environment variable each binary reads,
and nothing else, with the binary's own defaults."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "debug"


def help_envs(binary: str) -> dict[str, str | None]:
    path = BIN / binary
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build --workspace --bins` first")
    text = subprocess.run([str(path), "--help"], capture_output=True, text=True, check=True).stdout
    text = re.sub(r"\s+", " ", text)
    envs = {}
    for m in re.finditer(r"\[env: ([A-Z_]+)=[^\]]*\](?: \[default: ([^\]]*)\])?", text):
        envs[m.group(1)] = m.group(2)
    return envs


def file_envs(name: str) -> dict[str, str]:
    out = {}
    for line in (ROOT / "config" / name).read_text().splitlines():
        m = re.match(r"^#?([A-Z_]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


@pytest.mark.parametrize("binary,file", [("sluice-dataplane", "dataplane.env"), ("sluice-controller", "controller.env")])
def test_config_file_matches_binary(binary, file):
    envs = help_envs(binary)
    documented = file_envs(file)
    assert set(documented) == set(envs), f"{file} and {binary} --help disagree"
    for key, default in envs.items():
        if default is not None:
            assert documented[key] == default, f"{file}: {key} should default to {default}"
