#!/usr/bin/env python3
"""Create the compose stack's ``.env`` from ``.env.example``, generating its secrets.

Every key whose comment says "generated" gets a fresh random value; ``DOCKER_GID`` is read from the
Docker socket. An existing ``.env`` is never overwritten (so secrets are never rotated by accident).
Standard library only: it runs on the host before any image exists.

    python3 docker/make_env.py [--example .env.example] [--output .env] [--docker-socket PATH]
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED_MARK = "generated"


def fernet_key() -> str:
    """A key for Airflow's Fernet encryption: 32 random bytes, url-safe base64."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def secret_value(key: str) -> str:
    # Hex: safe inside URLs (postgresql://airflow:PASSWORD@...) and never starting with "-", which
    # command lines (mc, airflow users create) would take for an option.
    return fernet_key() if key == "AIRFLOW_FERNET_KEY" else secrets.token_hex(24)


def render(example: str, docker_gid: int | None) -> tuple[str, list[str]]:
    """The .env text, and the keys left empty that need a value from the user."""
    lines, missing, comments = [], [], []
    for line in example.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            # A key's comment block is the run of comment lines right above it.
            comments = [*comments, stripped] if stripped else []
            lines.append(line)
            continue
        key, _, value = line.partition("=")
        if not value and any(c.endswith(GENERATED_MARK) for c in comments):
            value = secret_value(key)
        elif not value and key == "DOCKER_GID":
            if docker_gid is None:
                missing.append(key)
            else:
                value = str(docker_gid)
        lines.append(f"{key}={value}")
        comments = []
    return "\n".join(lines) + "\n", missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--example", type=Path, default=ROOT / ".env.example")
    parser.add_argument("--output", type=Path, default=ROOT / ".env")
    parser.add_argument("--docker-socket", type=Path, default=Path("/var/run/docker.sock"))
    args = parser.parse_args(argv)

    if args.output.exists():
        print(f"{args.output} exists; not touching it (delete it to generate new secrets).")
        return 0
    docker_gid = args.docker_socket.stat().st_gid if args.docker_socket.exists() else None
    text, missing = render(args.example.read_text(), docker_gid)
    # Created private: it holds every password of the stack.
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    print(f"wrote {args.output} with generated secrets")
    for key in missing:
        print(
            f"  {key} is empty: no Docker socket at {args.docker_socket}; set it by hand "
            "(stat -c %g /var/run/docker.sock)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
