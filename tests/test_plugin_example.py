"""The example third-party plugin (examples/gitlab-adapter) is pip-installed into a
directory put on sys.path, discovered through its entry point, and signs in end to end.
Its own test suite (the conformance kit) runs against the installed package, and fails
against a broken copy of it."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import yaml

from gateway.plugins import discover
from tests.idp_shapes import SHAPES_ACCOUNTS
from tests.support.gateway import JITSI_BASE, start_gateway, token_from
from tests.support.op import TestOP

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gitlab-adapter"


def pip_install(source: Path, target: Path) -> None:
    """``pip install --target``: the package and its entry point, outside the venv."""
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


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    target = tmp_path_factory.mktemp("plugin-site")
    source = tmp_path_factory.mktemp("plugin-src") / "gitlab-adapter"
    shutil.copytree(EXAMPLE, source)  # pip builds in the source tree: keep the repo clean
    pip_install(source, target)
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
        user = jwt.decode(token_from(done.headers["location"]), options={"verify_signature": False})
        # No picture_avatar: the IdP's picture is not used; the verified e-mail's Gravatar is.
        assert user["context"]["user"]["avatar"].startswith("https://www.gravatar.com/avatar/")


@pytest.mark.asyncio
async def test_idp_picture_is_the_avatar_where_the_operator_allows_it(
    installed_plugin: Path, gitlab_op: TestOP, mongo_uri: str
) -> None:
    idp = {
        "id": "gitlab",
        "adapter": "gitlab",
        "scopes": ["openid", "profile", "email", "groups"],
        "picture_avatar": True,
    }
    async with start_gateway(gitlab_op, mongo_uri, idp=idp) as gw:
        async with httpx.AsyncClient(follow_redirects=False) as browser:
            done = await gw.sign_in(browser, gitlab_op, username="gitlab", password="gitlab-pw")
    user = jwt.decode(token_from(done.headers["location"]), options={"verify_signature": False})
    assert user["context"]["user"]["avatar"] == "https://gitlab.example/uploads/gitty.png"


def check_config(
    installed_plugin: Path, tmp_path: Path, **idp: object
) -> subprocess.CompletedProcess[str]:
    data = {
        "public_url": "https://meet.example.com",
        "cookies": {"secret": "s" * 40},
        "jitsi": {
            "base_url": "https://meet.example.com",
            "app_id": "app",
            "domain": "meet.example.com",
            "app_secret": "a" * 40,
        },
        "idps": [
            {
                "id": "gitlab",
                "adapter": "gitlab",
                "issuer": "https://gitlab.example",
                "client_id": "c",
                "client_secret": "x",
                **idp,
            }
        ],
    }
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_plugin), *sys.path])}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
    )


def test_mistyped_option_of_a_plain_pydantic_model_stops_start_up(
    installed_plugin: Path, tmp_path: Path
) -> None:
    """The example's options model is a plain BaseModel (pydantic ignores unknown keys):
    ``allowed_group`` for ``allowed_groups`` would switch the group check off."""
    done = check_config(installed_plugin, tmp_path, options={"allowed_group": ["acme"]})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "idps[0].options.allowed_group: unknown option (known: allowed_groups)" in done.stderr
    ok = check_config(installed_plugin, tmp_path, options={"allowed_groups": ["acme"]})
    assert ok.returncode == 0, ok.stderr


def test_check_config_reports_an_issuer_problem_under_the_issuer(
    installed_plugin: Path, tmp_path: Path
) -> None:
    done = check_config(installed_plugin, tmp_path, issuer="https://gitlab.example/users/sign_in")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "idps[0].issuer: GitLab's issuer is the instance root, no path" in done.stderr
    assert "options.issuer" not in done.stderr


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


def run_example_tests(site: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The example's own suite, as its author runs it, against the package in ``site``.

    The tests are a copy outside the package source (so ``jog_gitlab`` comes from ``site``,
    through the entry point the kit checks); the gateway comes from this checkout.
    """
    copy = tmp_path / "gitlab-adapter"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("jog_gitlab"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    return subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:asyncio"),
            *("-W", "error", "-v", "-rf", str(copy / "tests")),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_the_example_plugin_suite_passes(installed_plugin: Path, tmp_path: Path) -> None:
    done = run_example_tests(installed_plugin, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for check in ("entry-point", "options", "refused:outside-the-allowed-groups"):
        assert f"test_gitlab_adapter_conforms[{check}] PASSED" in done.stdout, done.stdout
    assert "robust:member-of-a-subgroup] PASSED" in done.stdout
    passed = re.search(r"\b(\d+) passed\b", done.stdout)
    assert passed and int(passed.group(1)) >= 20, done.stdout  # the kit's checks all ran
    assert "skipped" not in done.stdout and "failed" not in done.stdout


def test_the_example_plugin_suite_fails_for_a_broken_plugin(
    installed_plugin: Path, tmp_path: Path
) -> None:
    """The same suite against a copy that forgets to namespace groups: the kit fails it."""
    source = tmp_path / "broken-src"
    shutil.copytree(EXAMPLE, source)
    module = source / "jog_gitlab" / "__init__.py"
    code = module.read_text(encoding="utf-8")
    assert "groups=self.namespaced(groups)," in code
    module.write_text(code.replace("self.namespaced(groups)", "tuple(groups)"), encoding="utf-8")
    site = tmp_path / "broken-site"
    pip_install(source, site)
    done = run_example_tests(site, tmp_path / "run")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stdout and "[good:member-of-a-subgroup]" in done.stdout
    assert "namespaced 'conformance:' (use self.namespaced())" in done.stdout
