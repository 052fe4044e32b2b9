"""Readers for the deployment files, as Docker and Compose read them (no Docker engine runs here).

- ``.env`` files and Compose's variable interpolation (``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``,
  ``$$``), so the compose file can be checked with the values a user's ``.env`` would give it;
- Dockerfiles (instructions, stages, ``COPY`` sources, ``ENV``);
- ``.dockerignore`` matching (the rules of moby's patternmatcher: the last matching pattern wins,
  and a pattern matching a parent directory matches the file);
- pinned requirements files.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"

# -- .env and interpolation -----------------------------------------------------------------------

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(LookupError):
    """A ``${VAR:?message}`` (or ``${VAR?message}``) whose variable is unset (or empty)."""


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


@dataclass(frozen=True)
class VariableRef:
    name: str
    op: str | None  # None, "-", ":-", "?", ":?", "+", ":+"
    arg: str

    @property
    def required(self) -> bool:
        return self.op in (None, "?", ":?")


def variable_refs(text: str) -> list[VariableRef]:
    """Every variable a compose file refers to (escaped ``$$`` excluded)."""
    refs = []
    for m in _VAR.finditer(text):
        if m["escaped"]:
            continue
        refs.append(VariableRef(m["name"] or m["bare"], m["op"], m["arg"] or ""))
    return refs


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one string."""

    def substitute(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        name, op, arg = m["name"] or m["bare"], m["op"], m["arg"] or ""
        is_set = name in env
        is_nonempty = bool(env.get(name))
        if op == ":-":
            return env[name] if is_nonempty else arg
        if op == "-":
            return env[name] if is_set else arg
        if op == ":?":
            if not is_nonempty:
                raise MissingVariable(f"{name}: {arg}")
            return env[name]
        if op == "?":
            if not is_set:
                raise MissingVariable(f"{name}: {arg}")
            return env[name]
        if op == ":+":
            return arg if is_nonempty else ""
        if op == "+":
            return arg if is_set else ""
        return env.get(name, "")

    return _VAR.sub(substitute, value)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def load_compose_raw() -> dict[str, Any]:
    """The compose file as YAML (anchors and merge keys resolved), before interpolation."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    """The compose file as ``docker compose config`` would see it with ``env`` as its .env."""
    return _interpolate_tree(load_compose_raw(), env)


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (mapping or list form) as a dict of strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


# -- services ------------------------------------------------------------------------------------


def effective_env(compose: dict, name: str) -> dict[str, str]:
    """What a service's process sees: its image's ENV (for images built here, with compose's build args) under
    compose's environment."""
    service = compose["services"][name]
    env = {}
    if "build" in service:
        build_args = service["build"].get("args") or {}
        if isinstance(build_args, list):
            build_args = dict(item.split("=", 1) if "=" in item else (item, "") for item in build_args)
        env.update(
            parse_dockerfile(dockerfile_of(service)).pop().env({k: str(v) for k, v in build_args.items()})
        )
    env.update(service_environment(service))
    return env


def dockerfile_of(service: dict) -> Path:
    build = service["build"]
    context = REPO / build["context"]
    return context / build.get("dockerfile", "Dockerfile")


def trainer_pending() -> bool:
    """The trainer image belongs to the model helper's work; until its entry point exists, so may not its files."""
    return not any((REPO / "tasks" / name).exists() for name in ("train.py", "train"))


# -- Dockerfiles ----------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, COPY, RUN, ...
    text: str  # the arguments, continuation lines joined
    line: int

    def flags_and_args(self) -> tuple[dict[str, str], list[str]]:
        """``--flag=value`` options and the remaining arguments (JSON or shell form)."""
        flags: dict[str, str] = {}
        rest = self.text
        while rest.startswith("--"):
            token, _, rest = rest.partition(" ")
            key, _, value = token[2:].partition("=")
            flags[key] = value
            rest = rest.lstrip()
        if rest.startswith("["):
            return flags, json.loads(rest)
        return flags, shlex.split(rest)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self, build_args: Mapping[str, str] | None = None) -> dict[str, str]:
        """The stage's ``ENV`` values (``KEY=VALUE`` pairs; later ones win), with ``${NAME}`` replaced as
        Docker does: by the stage's ``ARG`` (its build argument, else its default) or an earlier ``ENV``."""
        build_args = build_args or {}
        scope: dict[str, str] = {}
        env: dict[str, str] = {}
        for instruction in self.instructions:
            if instruction.keyword == "ARG":
                for token in shlex.split(instruction.text):
                    name, _, default = token.partition("=")
                    scope[name] = build_args.get(name, default)
            elif instruction.keyword == "ENV":
                for token in shlex.split(instruction.text):
                    key, _, value = token.partition("=")
                    env[key] = scope[key] = interpolate(value, scope)
        return env


def parse_dockerfile(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, in order; the last one is the image."""
    stages: list[Stage] = []
    for instruction in _instructions(path.read_text()):
        if instruction.keyword == "FROM":
            parts = instruction.text.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages:
            if instruction.keyword != "ARG":
                raise ValueError(f"{path}:{instruction.line}: {instruction.keyword} before the first FROM")
        else:
            stages[-1].instructions.append(instruction)
    if not stages:
        raise ValueError(f"{path}: no FROM instruction")
    return stages


def _instructions(text: str) -> Iterator[Instruction]:
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue  # comments, parser directives and blank lines between instructions
        if buffer and line.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, rest = buffer.partition(" ")
        yield Instruction(keyword.upper(), rest.strip(), start)
        buffer = ""
    if buffer:
        raise ValueError(f"line {start}: instruction continues past the end of the file")


# -- .dockerignore --------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


@dataclass(frozen=True)
class DockerIgnore:
    patterns: tuple[tuple[bool, re.Pattern], ...]  # (is_exception, regex)
    source: Path | None

    @classmethod
    def for_build(cls, context: Path, dockerfile: Path) -> DockerIgnore:
        """BuildKit's choice: ``<Dockerfile>.dockerignore`` next to the Dockerfile, else the context's."""
        for candidate in (dockerfile.with_name(dockerfile.name + ".dockerignore"), context / ".dockerignore"):
            if candidate.exists():
                return cls.parse(candidate)
        return cls((), None)

    @classmethod
    def parse(cls, path: Path) -> DockerIgnore:
        patterns = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            pattern = line[1:].strip() if exception else line
            pattern = pattern.strip("/") or "."
            patterns.append((exception, _pattern_regex(pattern)))
        return cls(tuple(patterns), path)

    def excludes(self, relpath: str) -> bool:
        """Whether the file or directory ``relpath`` (relative to the context) is left out."""
        parts = relpath.strip("/").split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for exception, regex in self.patterns:
            if any(regex.match(c) for c in candidates):
                excluded = not exception
        return excluded


# -- requirements ---------------------------------------------------------------------------------


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file, by canonical name; other lines are errors."""
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            raise ValueError(
                f"{path}:{number}: {line!r}: keep pip options (indexes) in the Dockerfile, as "
                "docker/serving/Dockerfile does for the PyTorch CPU index; this file holds pins only"
            )
        name, sep, version = line.partition("==")
        if not sep or not version:
            raise ValueError(f"{path}:{number}: {line!r} is not pinned with ==")
        pins[canonical(name)] = version.strip()
    return pins
