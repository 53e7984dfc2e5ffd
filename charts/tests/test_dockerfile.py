"""The Dockerfile, checked without docker (which cannot run on these machines): it is parsed, and every path it
copies must exist in the build context (and not be excluded by .dockerignore) or come from an earlier stage,
every binary it copies or runs must be a binary of the Cargo workspace built in the builder stage, and every
runtime stage must run as a non-root user."""

from __future__ import annotations

import fnmatch
import json
import pathlib
import re
import shlex
import tomllib
from dataclasses import dataclass, field

import pytest

from conftest import REPO, render, variants

DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    """One FROM ... AS name section."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse() -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of the Dockerfile: comments dropped, continuation lines joined."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the Dockerfile ends in a continuation line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert m, f"cannot parse FROM {args}"
            stages.append(Stage(m.group(1), m.group(2) or str(len(stages))))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


def workspace_binaries() -> dict[str, str]:
    """binary name -> package name, for every binary target of every workspace member (as cargo finds them)."""
    root = tomllib.loads((REPO / "Cargo.toml").read_text())
    out = {}
    for member in root["workspace"]["members"]:
        manifest = tomllib.loads((REPO / member / "Cargo.toml").read_text())
        package = manifest["package"]["name"]
        explicit = {pathlib.PurePosixPath(b.get("path", "")) for b in manifest.get("bin", [])}
        for bin_ in manifest.get("bin", []):
            out[bin_["name"]] = package
        if manifest["package"].get("autobins", True):
            # Inferred targets, unless an explicit [[bin]] already builds that file.
            inferred = {pathlib.PurePosixPath("src/main.rs"): package}
            for path in (REPO / member / "src" / "bin").glob("*.rs"):
                inferred[pathlib.PurePosixPath("src/bin", path.name)] = path.stem
            for path, name in inferred.items():
                if (REPO / member / path).exists() and path not in explicit:
                    out.setdefault(name, package)
    return out


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    parts = pathlib.PurePosixPath(path).parts
    for pattern in dockerignore():
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatch("/".join(parts[:i]), pattern.removeprefix("**/")):
                return True
    return False


def copy_args(args: str) -> tuple[dict[str, str], list[str], str]:
    """(--flags, sources, destination) of a COPY instruction (shell or JSON form)."""
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words[:-1], words[-1]


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec form (JSON array), not a shell: {args}"
    return json.loads(args)


GLOBAL_ARGS, STAGES = parse()
STAGE_NAMES = [s.name for s in STAGES]
BUILDER = next(s for s in STAGES if any("cargo build" in r for r in s.all("RUN")))
RUNTIMES = [s for s in STAGES if s is not BUILDER]
BINARIES = workspace_binaries()


def built_in(stage: Stage) -> set[str]:
    """Binaries the stage's `cargo build` produces (its -p packages, or the whole workspace)."""
    cmd = " ".join(r for r in stage.all("RUN") if "cargo build" in r)
    packages = set(re.findall(r"(?:-p|--package)[ =](\S+)", cmd))
    return {b for b, p in BINARIES.items() if not packages or p in packages}


def copied_into(stage: Stage) -> set[str]:
    names = set()
    for args in stage.all("COPY"):
        _, sources, _ = copy_args(args)
        names |= {pathlib.PurePosixPath(s).name for s in sources}
    return names


def test_stages_are_named_and_the_default_carries_every_binary() -> None:
    assert len(STAGE_NAMES) == len(set(STAGE_NAMES))
    assert {"controller", "dataplane"} <= set(STAGE_NAMES), "one target per component"
    # `docker build` without --target builds the last stage: the image the chart and the kind suite use.
    assert {"sluice-controller", "sluice-dataplane", "sluice-echo"} <= copied_into(STAGES[-1])


def test_builder_has_protoc_and_a_recent_enough_toolchain() -> None:
    assert any("protobuf-compiler" in r for r in BUILDER.all("RUN")), "etcd-client's build script needs protoc"
    assert BUILDER.base.startswith("rust:")
    version = BUILDER.base.removeprefix("rust:").split("-")[0]
    version = GLOBAL_ARGS.get(version[2:-1], version) if version.startswith("${") else version
    needed = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(version) >= as_tuple(needed)[: len(as_tuple(version))], f"rust {version} < {needed}"
    assert any("--locked" in r for r in BUILDER.all("RUN")), "build with the committed Cargo.lock"


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_NAMES)
def test_every_copied_path_exists(stage: Stage) -> None:
    for args in stage.all("COPY") + stage.all("ADD"):
        flags, sources, _ = copy_args(args)
        if "from" in flags:
            assert flags["from"] in STAGE_NAMES[: STAGES.index(stage)], f"COPY --from={flags['from']}: no earlier stage"
            source_stage = STAGES[STAGE_NAMES.index(flags["from"])]
            produced = " ".join(source_stage.all("RUN"))
            for src in sources:
                name = pathlib.PurePosixPath(src).name
                assert name in BINARIES, f"{src} is not a binary of the workspace"
                assert name in built_in(source_stage), f"stage {flags['from']} does not build {name}"
                assert f"target/release/{name}" in produced and pathlib.PurePosixPath(src).parent.as_posix() in produced
            continue
        for src in sources:
            path = (REPO / src).resolve()
            assert path.exists(), f"COPY {src}: not in the repository"
            if src not in (".", "./"):
                assert not ignored(src), f"COPY {src}: excluded by .dockerignore"


def test_builder_copies_every_workspace_member() -> None:
    members = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["members"]
    copied = set()
    for args in BUILDER.all("COPY"):
        _, sources, _ = copy_args(args)
        copied |= {s.rstrip("/") for s in sources}
    if "." not in copied:
        assert {"Cargo.toml", "Cargo.lock"} <= copied

        # A member inside a copied directory (bench/config in bench) comes with it.
        def covered(member: str) -> bool:
            parts = member.split("/")
            return any("/".join(parts[:i]) in copied for i in range(1, len(parts) + 1))

        missing = {m for m in members if not covered(m)}
        assert not missing, f"cargo needs every member: missing {missing}"


@pytest.mark.parametrize("stage", RUNTIMES, ids=[s.name for s in RUNTIMES])
def test_runtime_stages_run_workspace_binaries_as_non_root(stage: Stage) -> None:
    users = stage.all("USER")
    assert users, f"stage {stage.name} sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root"), f"stage {stage.name} runs as root"
    assert not stage.all("RUN"), "runtime stages have no shell to run anything with"
    present = copied_into(stage)
    for keyword in ("ENTRYPOINT", "CMD"):
        for args in stage.all(keyword):
            argv = exec_form(args)
            if argv:
                assert argv[0] in BINARIES and argv[0] in present, f"{keyword} runs {argv[0]}, not a binary here"


def test_chart_commands_exist_in_the_default_image() -> None:
    present = copied_into(STAGES[-1])
    for name, values in variants().items():
        for obj in render(values).objects:
            if obj["kind"] in ("Deployment", "DaemonSet"):
                for c in obj["spec"]["template"]["spec"]["containers"]:
                    assert c["command"][0] in present, f"{name}: {c['command'][0]} is not in the image"


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    for needed in ("Cargo.toml", "Cargo.lock", "controller/src/main.rs", "dataplane/src/main.rs"):
        assert not ignored(needed)
    for dropped in ("target", ".git", ".local"):
        assert ignored(dropped)
