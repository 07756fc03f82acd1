"""The example third-party plugin (examples/gitlab-adapter) is pip-installed into a
directory put on sys.path, discovered through its entry point, and signs in end to end."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.plugins import discover
from tests.idp_shapes import SHAPES_ACCOUNTS
from tests.support.gateway import JITSI_BASE, start_gateway
from tests.support.op import TestOP

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gitlab-adapter"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    target = tmp_path_factory.mktemp("plugin-site")
    source = tmp_path_factory.mktemp("plugin-src") / "gitlab-adapter"
    shutil.copytree(EXAMPLE, source)  # pip builds in the source tree: keep the repo clean
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop("jog_gitlab", None)
        importlib.invalidate_caches()


@pytest.fixture(scope="module")
def gitlab_op() -> Iterator[TestOP]:
    claims = {
        "openid": ["sub"],
        "profile": ["name", "nickname", "picture"],
        "email": ["email", "email_verified"],
        "groups": ["groups_direct"],
    }
    with TestOP.start(SHAPES_ACCOUNTS, claims=claims) as op:
        yield op


def test_plugin_is_discovered_with_its_package(installed_plugin: Path) -> None:
    registry = discover()
    info = registry.get("gitlab")
    assert info is not None
    assert (info.distribution, info.version) == ("jog-gitlab-adapter", "1.0.0")
    assert info.target == "jog_gitlab:GitLabAdapter"
    assert registry.get("generic") is not None
    assert registry.problems == ()


@pytest.mark.asyncio
async def test_sign_in_through_the_plugin(
    installed_plugin: Path, gitlab_op: TestOP, mongo_uri: str
) -> None:
    idp = {
        "id": "gitlab",
        "adapter": "gitlab",
        "scopes": ["openid", "profile", "email", "groups"],
        "options": {"allowed_groups": ["acme"]},
    }
    async with start_gateway(gitlab_op, mongo_uri, idp=idp) as gw:
        async with httpx.AsyncClient(follow_redirects=False) as browser:
            done = await gw.sign_in(browser, gitlab_op, username="gitlab", password="gitlab-pw")
        assert done.headers["location"].startswith(f"{JITSI_BASE}/standup?jwt=")
        doc = await gw.store.sessions.collection.find_one({})
        identity = doc["identity"]
        assert identity["username"] == "gitty"
        assert identity["groups"] == ["gitlab:acme/devs", "gitlab:other"]
        assert identity["email_verified"] is True


@pytest.mark.asyncio
async def test_plugin_refusal_is_policy_denied(
    installed_plugin: Path, gitlab_op: TestOP, mongo_uri: str
) -> None:
    idp = {
        "id": "gitlab",
        "adapter": "gitlab",
        "scopes": ["openid", "profile", "groups"],
        "options": {"allowed_groups": ["nobody"]},
    }
    async with start_gateway(gitlab_op, mongo_uri, idp=idp) as gw:
        async with httpx.AsyncClient(follow_redirects=False) as browser:
            callback = await gw.start_and_login(
                browser, gitlab_op, username="gitlab", password="gitlab-pw"
            )
            assert (await browser.get(callback)).status_code == 403
        failure = await gw.store.audit.collection.find_one({"outcome": "failure"})
        assert failure["reason"] == "policy_denied"
        assert "group_not_allowed" in failure["detail"]


def test_cli_lists_the_plugin(installed_plugin: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_plugin), *sys.path])}
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "adapters"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    line = next(li for li in out.stdout.splitlines() if li.startswith("gitlab"))
    assert "jog-gitlab-adapter" in line and "1.0.0" in line
