#!/usr/bin/env python3
"""Checks docker/compose.yaml against the image (scripts/container-check).

  compose.py COMPOSE_FILE IMAGE_INSPECT_JSON

Parses the file (PyYAML), resolves ${VAR:-default} / ${VAR:?message} as
Compose does when VAR is unset, and checks that it builds a Dockerfile that
exists, mounts a named volume on the image's volume, mounts the keys over
the production profile, requires the id-hash secret, publishes the exposed
port, runs the image's health check and gives the service its 40 s grace.
"""

import json
import os
import re
import sys

import yaml

VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def resolve(value, env):
    """Interpolation with the given environment; returns (text, missing-required)."""
    missing = []

    def sub(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == "-":
            return arg
        if op == "?":
            missing.append(arg or name)
        return ""

    return VAR.sub(sub, value), missing


def seconds(text):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(text))
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0) if m else 0


def main(compose_path, inspect_path):
    with open(compose_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    with open(inspect_path, encoding="utf-8") as f:
        image = json.load(f)[0]
    config = image.get("Config") or {}
    here = os.path.dirname(os.path.abspath(compose_path))
    problems = []
    services = doc.get("services") or {}
    if list(services) != ["subsidy-service"]:
        problems.append(f"services {list(services)} (want subsidy-service)")
    svc = services.get("subsidy-service") or {}

    build = svc.get("build") or {}
    context = os.path.normpath(os.path.join(here, build.get("context", ".")))
    dockerfiles = []
    for env in ({}, {"SUBSIDY_DOCKERFILE": "docker/Dockerfile.runtime"}):
        rel, _ = resolve(build.get("dockerfile", "Dockerfile"), env)
        dockerfiles.append(rel)
        if not os.path.isfile(os.path.join(context, rel)):
            problems.append(f"build.dockerfile {rel} does not exist in the context {context}")
    if dockerfiles[0] != "docker/Dockerfile":
        problems.append(f"default build.dockerfile {dockerfiles[0]} (want docker/Dockerfile)")
    if not os.path.isfile(os.path.join(context, "Cargo.toml")):
        problems.append(f"build.context {context} is not the repository root")

    volumes = svc.get("volumes") or []
    declared = set((doc.get("volumes") or {}).keys())
    image_volumes = set((config.get("Volumes") or {}).keys())
    mounts = {}
    for v in volumes:
        parts = v.split(":")
        mounts[parts[1]] = (parts[0], parts[2:] if len(parts) > 2 else [])
    for vol in image_volumes:
        src = mounts.get(vol, ("", []))[0]
        if src not in declared:
            problems.append(f"the image's volume {vol} gets {src or 'nothing'} (want a named volume)")
    keys = mounts.get("/app/config/production.toml")
    if not keys or "ro" not in keys[1]:
        problems.append("no read-only mount over /app/config/production.toml")

    envs = svc.get("environment") or {}
    secret, missing = resolve(str(envs.get("SUBSIDY__PRIVACY__ID_HASH_SECRET", "")), {})
    if not missing:
        problems.append("SUBSIDY__PRIVACY__ID_HASH_SECRET is not required (${VAR:?message})")

    exposed = {p.split("/")[0] for p in (config.get("ExposedPorts") or {})}
    published = {str(p).split(":")[-1] for p in svc.get("ports") or []}
    if not exposed or not exposed <= published:
        problems.append(f"ports {sorted(published)} do not publish the exposed {sorted(exposed)}")

    test = (svc.get("healthcheck") or {}).get("test")
    image_test = (config.get("Healthcheck") or image.get("Healthcheck") or {}).get("Test")
    if test and image_test and test != image_test:
        problems.append(f"healthcheck {test} differs from the image's {image_test}")

    grace = seconds(svc.get("stop_grace_period", "10s"))
    if grace < 40:
        problems.append(f"stop_grace_period {grace}s (want at least 40s)")

    for p in problems:
        print("FAIL compose: " + p)
    shown = os.path.join(os.path.basename(here), os.path.basename(compose_path))
    print(f"compose: {shown} parses; builds {' or '.join(dockerfiles)}; "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
