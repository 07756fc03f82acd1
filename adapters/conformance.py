"""Conformance kit: check an IdP adapter the way the gateway's own adapters are checked.

A plugin's test suite describes its adapter with a few claims cases and runs the kit::

    from adapters.base import AccessDenied
    from adapters.conformance import AdapterKit, Good, Refused

    KIT = AdapterKit(
        GitLabAdapter,
        entry_point="gitlab",
        issuer="https://gitlab.example",
        good=[Good("member", CLAIMS, expect={"username": "gitty"})],
        refused=[Refused("outsider", OUTSIDER, AccessDenied, reason="group_not_allowed")],
        options={"allowed_groups": ["acme"]},
    )
    test_conformance = KIT.pytest_test()  # one pytest test per check

or, without pytest, ``KIT.check_all()``. Every check is a plain function raising
``AssertionError`` with a message that names the case and what the contract expected, so
the kit adds no runtime dependency to the gateway (pytest is imported only by
:meth:`AdapterKit.pytest_test`).

What it checks: the entry point resolves to the class (through the gateway's own loader),
the class is a concrete ``Adapter``; options are validated as ``open_adapters`` does (an
unknown or mistyped key refused); every good case gives an ``Identity`` with the expected
fields and the contract's invariants; every refused case raises exactly ``AccessDenied`` or
``AdapterError``; claims of the wrong type, missing or huge end in an ``Identity`` or an
``AdapterError``, never another exception; ``email_verified`` is not defaulted to true; and
the optional capabilities behave (extra authorization parameters never name the gateway's
own, a foreign issuer is never resolved, enrichment keeps the person's key).

Options and registration are checked with the gateway's own loader (``gateway.plugins``,
imported when a check runs), not a copy of its rules: what passes here is what ``serve``
accepts.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import threading
import traceback
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from adapters.base import (
    AccessDenied,
    Adapter,
    AdapterError,
    AuthorizationParams,
    ConfigProblem,
    Identity,
    IdentityEnricher,
    IssuerResolver,
)
from adapters.base import identity_problems as base_identity_problems

#: Claims the gateway validates before an adapter sees them (type and value): mutating
#: them would test cases the gateway never delivers.
GATEWAY_CHECKED_CLAIMS = frozenset({"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "azp"})

#: Authorization-request parameters the gateway sets itself; an adapter's value is dropped.
GATEWAY_AUTHORIZATION_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "login_hint",
    }
)

FOREIGN_ISSUER = "https://conformance.invalid/foreign-issuer"
UNKNOWN_OPTION = "conformance_unknown_option"
HUGE = "x" * 100_000

#: Wrong-typed, empty and oversized values put in place of each claim (and nested claim).
WRONG_VALUES: tuple[tuple[str, Any], ...] = (
    ("None", None),
    ("int", 12345),
    ("float", 1.5),
    ("bool", True),
    ("empty-string", ""),
    ("blank-string", "   "),
    ("string", "conformance"),
    ("mixed-list", [1, None, {"x": 1}, "a", ["b"]]),
    ("empty-list", []),
    ("object", {"nested": ["x"], "n": 1}),
    ("huge-string", HUGE),
    ("huge-list", ["g"] * 10_000),
)

#: What a fake HTTP client answers an enricher with: a JSON API gone wrong.
ENRICH_ANSWERS: tuple[tuple[str, Any], ...] = (
    ("empty-object", {}),
    ("null", None),
    ("string", "not json"),
    ("list", []),
    ("value-string", {"value": "x"}),
    ("value-mixed", {"value": [1, None, {"id": 5}, {"id": "g-1"}, {"x": 1}]}),
)
MAX_ENRICH_CALLS = 200


@dataclass(frozen=True)
class Good:
    """Claims the adapter must accept. ``expect`` maps ``Identity`` field names to values
    (lists compare equal to tuples). ``options`` replaces the kit's options for this case;
    ``issuer`` is the configured issuer of the IdP entry (default: the kit's)."""

    id: str
    claims: Mapping[str, Any]
    userinfo: Mapping[str, Any] | None = None
    expect: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] | None = None
    issuer: str | None = None


@dataclass(frozen=True)
class Refused:
    """Claims the adapter must refuse with exactly ``raises``: ``AccessDenied`` (a valid
    person the configuration does not admit, audited ``policy_denied``) or ``AdapterError``
    (claims it cannot use, audited ``claims_invalid``); ``reason`` is checked when given."""

    id: str
    claims: Mapping[str, Any]
    raises: type[AdapterError]
    userinfo: Mapping[str, Any] | None = None
    reason: str | None = None
    options: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class BadConfig:
    """An IdP entry ``check_config`` must report: ``expect`` is a substring of one problem
    as the gateway prints it (``idps[0].issuer: ...``, ``idps[0].options.x: ...``)."""

    id: str
    expect: str
    issuer: str | None = None
    options: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Check:
    """One named check; calling it raises ``AssertionError`` when the adapter fails it."""

    id: str
    run: Callable[[], None]

    def __call__(self) -> None:
        self.run()


def identity_problems(identity: Any, idp_id: str) -> list[str]:
    """What in ``identity`` breaks the contract's promises (empty when nothing does): the
    gateway's own list (:func:`adapters.base.identity_problems`, which ``serve`` enforces on
    every sign-in), plus ``extra`` that can be stored in MongoDB and the audit log."""
    problems = base_identity_problems(identity, idp_id)
    if isinstance(identity, Identity) and isinstance(identity.extra, Mapping):
        problem = _storable(identity.extra, "extra")
        if problem:
            problems.append(problem)
    return problems


def check_identity(identity: Any, idp_id: str) -> None:
    """Raise ``AssertionError`` naming every broken invariant of ``identity``."""
    problems = identity_problems(identity, idp_id)
    assert not problems, "Identity breaks the contract:\n  " + "\n  ".join(problems)


class AdapterKit:
    """An adapter (class or entry-point name) plus its author's cases; yields checks.

    ``options`` are the IdP entry's ``options`` for every case that gives none; ``issuer``
    its configured issuer. ``bad_options`` are option mappings the gateway must refuse at
    start-up; ``bad_config`` entries ``check_config`` must report.
    ``email_verified_claim`` is the claim removed to check that ``email_verified`` is never
    defaulted to true (``None`` skips that check, for an adapter whose configuration says
    to trust e-mails). ``extra_options_allowed`` acknowledges an ``Options`` model that
    says ``extra="allow"`` (otherwise a failure: typos would pass silently).
    """

    def __init__(
        self,
        adapter: type[Adapter] | str,
        *,
        good: Sequence[Good],
        refused: Sequence[Refused] = (),
        entry_point: str | None = None,
        options: Mapping[str, Any] | None = None,
        issuer: str = "https://idp.example.org",
        bad_options: Sequence[Mapping[str, Any]] = (),
        bad_config: Sequence[BadConfig] = (),
        idp_id: str = "conformance",
        email_verified_claim: str | None = "email_verified",
        extra_options_allowed: bool = False,
    ) -> None:
        if not good:
            raise ValueError("AdapterKit needs at least one Good case (the robustness base)")
        ids = [c.id for c in good] + [c.id for c in refused] + [c.id for c in bad_config]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"case ids must be unique: {duplicates}")
        for case in refused:
            if not (isinstance(case.raises, type) and issubclass(case.raises, AdapterError)):
                raise ValueError(f"Refused {case.id!r}: raises must be AccessDenied/AdapterError")
        if isinstance(adapter, str):
            self._cls: type[Adapter] | None = None
            self.entry_point: str | None = entry_point or adapter
        else:
            self._cls = adapter
            self.entry_point = entry_point
        self.good = tuple(good)
        self.refused = tuple(refused)
        self.options: Mapping[str, Any] = dict(options or {})
        self.issuer = issuer
        self.bad_options = tuple(bad_options)
        self.bad_config = tuple(bad_config)
        self.idp_id = idp_id
        self.email_verified_claim = email_verified_claim
        self.extra_options_allowed = extra_options_allowed

    # ---- running ----------------------------------------------------------------------

    def checks(self) -> list[Check]:
        """Every check, in order; ids name the case (``good:member``, ``robust:member``)."""
        out = [
            Check("entry-point", self.check_entry_point),
            Check("class", self.check_class),
            Check("options", self.check_options),
        ]
        out += [
            Check(f"bad-options:{i}", _bind(self.check_bad_options, i))
            for i in range(len(self.bad_options))
        ]
        out += [
            Check(f"bad-config:{c.id}", _bind(self.check_bad_config, c)) for c in self.bad_config
        ]
        out += [Check(f"good:{c.id}", _bind(self.check_good, c)) for c in self.good]
        out += [Check(f"refused:{c.id}", _bind(self.check_refused, c)) for c in self.refused]
        out.append(Check("refused:no-claims", self.check_no_claims))
        out += [Check(f"robust:{c.id}", _bind(self.check_robust, c)) for c in self.good]
        if self.email_verified_claim:
            out += [
                Check(f"email-verified-not-defaulted:{c.id}", _bind(self.check_email_verified, c))
                for c in self.good
            ]
        out.append(Check("capability:authorization-params", self.check_authorization_params))
        out.append(Check("capability:resolve-issuer", self.check_resolve_issuer))
        out += [Check(f"capability:enrich:{c.id}", _bind(self.check_enrich, c)) for c in self.good]
        return out

    def check_all(self) -> None:
        """Run every check; raise one ``AssertionError`` listing all that failed."""
        failed: list[str] = []
        for check in self.checks():
            try:
                check()
            except AssertionError as exc:
                failed.append(f"[{check.id}] {exc}")
        assert not failed, f"{len(failed)} conformance check(s) failed:\n" + "\n".join(failed)

    def pytest_test(self) -> Callable[..., None]:
        """A pytest test function, parametrised with one test per check (ids as above).

        Assign it to a module-level ``test_...`` name in the plugin's test file.
        """
        import pytest  # only here: the kit itself must not need pytest at run time

        checks = self.checks()

        @pytest.mark.parametrize("check", checks, ids=[c.id for c in checks])
        def test_adapter_conformance(check: Check) -> None:
            check()

        return test_adapter_conformance

    # ---- the class, its registration, its options --------------------------------------

    @property
    def adapter_class(self) -> type[Adapter]:
        """The class under test (resolved through the entry point when given by name)."""
        if self._cls is None:
            self._cls = self._registered().cls
        return self._cls

    def _registered(self) -> Any:
        """The gateway registry's entry for this adapter: what ``serve`` would load."""
        from gateway.plugins import GROUP, discover  # the gateway's own loader, not a copy

        registry = discover()
        if self.entry_point is None:
            cls = self._cls
            names = [i.name for i in registry.adapters.values() if i.cls is cls]
            assert names, (
                f"{_name(cls)} is not registered in the {GROUP!r} entry-point group "
                "(is the package installed, e.g. pip install -e .?)"
            )
            return registry.adapters[names[0]]
        info = registry.get(self.entry_point)
        if info is None:
            mine = [str(p) for p in registry.problems if p.name == self.entry_point]
            detail = "; ".join(mine) or "no such entry point (is the package installed?)"
            raise AssertionError(f"entry point {self.entry_point!r} in {GROUP!r}: {detail}")
        return info

    def check_entry_point(self) -> None:
        """The entry point loads, without a problem, and names this very class."""
        info = self._registered()
        if self._cls is not None:
            assert info.cls is self._cls, (
                f"entry point {info.name!r} loads {info.target} ({_name(info.cls)}), "
                f"not {_name(self._cls)}"
            )
        from gateway.plugins import discover

        clashes = [str(p) for p in discover().problems if p.name == info.name]
        assert not clashes, f"entry point {info.name!r}: {'; '.join(clashes)}"

    def check_class(self) -> None:
        """A concrete ``Adapter`` subclass with a pydantic ``Options`` model; sync methods."""
        cls = self.adapter_class
        assert isinstance(cls, type) and issubclass(cls, Adapter), (
            f"{cls!r} is not a subclass of adapters.base.Adapter"
        )
        assert not inspect.isabstract(cls), (
            f"{_name(cls)} is abstract: {sorted(getattr(cls, '__abstractmethods__', ()))} "
            "not implemented"
        )
        assert isinstance(cls.Options, type) and issubclass(cls.Options, BaseModel), (
            f"{_name(cls)}.Options must be a pydantic BaseModel subclass, got {cls.Options!r}"
        )
        assert isinstance(cls.description, str) and "\n" not in cls.description, (
            f"{_name(cls)}.description must be one line of text"
        )
        _assert_params(cls.identity, ["claims", "userinfo"], f"{_name(cls)}.identity")
        for method in ("identity", "check_config"):
            assert not inspect.iscoroutinefunction(getattr(cls, method)), (
                f"{_name(cls)}.{method} must be synchronous (I/O belongs in enrich)"
            )

    def check_options(self) -> None:
        """The kit's options load and ``check_config`` accepts them; unknown keys, typos of
        declared ones, and loose nested models are refused as the gateway refuses them."""
        model = self.adapter_class.Options
        adapter = self.build(self.options)
        found = adapter.check_config(self.issuer)
        lines = self._config_lines(found)
        assert not lines, (
            f"check_config({self.issuer!r}) reports problems for the kit's own options "
            f"(use options/issuer of a valid IdP entry): {lines}"
        )
        if model.model_config.get("extra") == "allow":
            assert self.extra_options_allowed, (
                f"{_name(model)} says extra='allow': a mistyped option is silently accepted; "
                "pass extra_options_allowed=True to the kit if that is deliberate"
            )
            return
        names = set(model.model_fields)
        names |= {f.alias for f in model.model_fields.values() if f.alias}
        typos = sorted(n[:-1] for n in names if len(n) > 1 and n[:-1] not in names)
        wrong = [UNKNOWN_OPTION, *typos]
        for key in wrong:
            problems = self._option_problems({**self.options, key: "x"})
            assert any(loc[:1] == (key,) for loc, _ in problems), (
                f"option {key!r} (unknown to {_name(model)}) was not refused: the gateway "
                f"would start with it; problems: {problems}"
            )
        for path, nested in _nested_models(model):
            assert nested.model_config.get("extra") == "forbid", (
                f"{_name(model)}.{path} is {_name(nested)}, which does not forbid unknown keys "
                "(the gateway checks only the top level): derive it from AdapterOptions"
            )

    def check_bad_options(self, index: int) -> None:
        """An option mapping the author says is invalid stops start-up."""
        raw = self.bad_options[index]
        problems = self._option_problems(raw)
        assert problems, (
            f"bad_options[{index}] {_short(raw)} was accepted by "
            f"{_name(self.adapter_class.Options)}"
        )

    def check_bad_config(self, case: BadConfig) -> None:
        """``check_config`` reports the author's bad IdP entry, as the gateway prints it."""
        adapter = self.build(self._options_of(case.options))
        lines = self._config_lines(adapter.check_config(case.issuer or self.issuer))
        assert any(case.expect in line for line in lines), (
            f"check_config: expected a problem containing {case.expect!r}, got {lines}"
        )

    def build(self, options: Mapping[str, Any]) -> Adapter:
        """The adapter as ``open_adapters`` makes it: options through the gateway's check."""
        from gateway.plugins import validate_options

        cls = self.adapter_class
        validated, problems = validate_options(cls.Options, options)
        assert validated is not None and not problems, (
            f"options {_short(options)} are refused by {_name(cls.Options)}: {problems}"
        )
        return cls(self.idp_id, validated)

    def _option_problems(self, raw: Mapping[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
        from gateway.plugins import validate_options

        return validate_options(self.adapter_class.Options, raw)[1]

    def _config_lines(self, found: Any) -> list[str]:
        from gateway.plugins import problem_paths

        assert isinstance(found, list), f"check_config must return a list, got {_short(found)}"
        for item in found:
            ok = isinstance(item, str) or (
                isinstance(item, ConfigProblem) and isinstance(item.field, str) and item.field
            )
            assert ok, f"check_config items must be str or ConfigProblem, got {_short(item)}"
        return problem_paths(0, found)

    def _options_of(self, options: Mapping[str, Any] | None) -> Mapping[str, Any]:
        return self.options if options is None else options

    # ---- identity ---------------------------------------------------------------------

    def check_good(self, case: Good) -> None:
        """An Identity with the contract's invariants and the expected fields; the issuer is
        the token's ``iss``; claims left untouched; the same claims give the same Identity."""
        adapter = self.build(self._options_of(case.options))
        claims, userinfo = copy.deepcopy(dict(case.claims)), _copy(case.userinfo)
        try:
            identity = adapter.identity(claims, userinfo)
        except Exception as exc:
            raise AssertionError(f"good case {case.id!r} raised {_exc(exc)}") from exc
        check_identity(identity, self.idp_id)
        assert claims == case.claims and userinfo == _copy(case.userinfo), (
            f"identity() changed the claims or userinfo it was given (case {case.id!r})"
        )
        expected = dict(case.expect)
        if "issuer" not in expected and "iss" in case.claims:
            expected["issuer"] = case.claims["iss"]
        fields = {f for f in Identity.__dataclass_fields__}
        unknown = sorted(set(expected) - fields)
        assert not unknown, f"expect names no Identity field: {unknown} (fields: {sorted(fields)})"
        wrong = {
            name: (getattr(identity, name), value)
            for name, value in expected.items()
            if not _same(getattr(identity, name), value)
        }
        assert not wrong, f"case {case.id!r}: " + "; ".join(
            f"{name} is {got!r}, expected {want!r}" for name, (got, want) in wrong.items()
        )
        again = adapter.identity(copy.deepcopy(dict(case.claims)), _copy(case.userinfo))
        assert again == identity, f"case {case.id!r}: the same claims gave another Identity"
        self._check_issuer_accepted(adapter, case)

    def _check_issuer_accepted(self, adapter: Adapter, case: Good) -> None:
        """A good case is one the gateway would deliver: its ``iss`` passes the issuer
        check (equal to the configured issuer, or resolved by the adapter)."""
        configured = case.issuer or self.issuer
        iss = case.claims.get("iss")
        if isinstance(adapter, IssuerResolver):
            resolved = adapter.resolve_issuer(configured, copy.deepcopy(dict(case.claims)))
            assert resolved == iss, (
                f"case {case.id!r}: the gateway would refuse this token: iss {iss!r} but "
                f"resolve_issuer({configured!r}, claims) gives {resolved!r}"
            )
        else:
            assert iss == configured, (
                f"case {case.id!r}: the gateway would refuse this token: iss {iss!r} is not "
                f"the configured issuer {configured!r} (set Good.issuer or the kit's issuer)"
            )

    def check_refused(self, case: Refused) -> None:
        """Exactly the declared refusal: AccessDenied vs AdapterError decide the audit reason
        (``policy_denied`` vs ``claims_invalid``); any other exception is a crash."""
        adapter = self.build(self._options_of(case.options))
        try:
            identity = adapter.identity(copy.deepcopy(dict(case.claims)), _copy(case.userinfo))
        except AdapterError as exc:
            want_denied = issubclass(case.raises, AccessDenied)
            assert isinstance(exc, case.raises) and (
                want_denied or not isinstance(exc, AccessDenied)
            ), (
                f"case {case.id!r}: expected {case.raises.__name__}, got {_exc(exc)} "
                f"(audited as {_audit_reason(exc)})"
            )
            _check_refusal(exc, case.id)
            if case.reason is not None:
                assert exc.reason == case.reason, (
                    f"case {case.id!r}: reason is {exc.reason!r}, expected {case.reason!r}"
                )
        except Exception as exc:
            raise AssertionError(
                f"case {case.id!r}: expected {case.raises.__name__}, but {_exc(exc)} leaked "
                "(the gateway would answer 500, not a refusal page)"
            ) from exc
        else:
            raise AssertionError(
                f"case {case.id!r}: expected {case.raises.__name__}, got an Identity "
                f"(subject {getattr(identity, 'subject', '?')!r})"
            )

    def check_no_claims(self) -> None:
        """A token with nothing but its issuer is refused, not a crash nor a person."""
        iss = self.good[0].claims.get("iss", self.issuer)
        adapter = self.build(self._options_of(self.good[0].options))
        try:
            identity = adapter.identity({"iss": iss}, None)
        except AdapterError as exc:
            _check_refusal(exc, "no-claims")
            return
        except Exception as exc:
            raise AssertionError(f"claims {{'iss': ...}} only: {_exc(exc)} leaked") from exc
        raise AssertionError(
            f"claims {{'iss': ...}} only gave an Identity (subject {identity.subject!r}); "
            "an adapter needs at least a subject"
        )

    def check_robust(self, case: Good) -> None:
        """Each claim missing, wrong-typed, empty or huge (one at a time, nested mappings
        too): an Identity that keeps the invariants, or an AdapterError; nothing else."""
        adapter = self.build(self._options_of(case.options))
        resolver = adapter if isinstance(adapter, IssuerResolver) else None
        configured = case.issuer or self.issuer
        failures: list[str] = []
        for label, claims, userinfo in _mutations(case.claims, case.userinfo):
            try:
                identity = adapter.identity(claims, userinfo)
            except AdapterError as exc:
                problem = _refusal_problem(exc)
                if problem:
                    failures.append(f"{label}: {problem}")
            except Exception as exc:
                failures.append(f"{label}: {_exc(exc)} leaked")
            else:
                problems = identity_problems(identity, self.idp_id)
                if problems:
                    failures.append(f"{label}: {'; '.join(problems)}")
            if resolver is not None:
                try:
                    resolved = resolver.resolve_issuer(configured, claims)
                except Exception as exc:
                    failures.append(f"{label}: resolve_issuer raised {_exc(exc)}")
                else:
                    if not isinstance(resolved, str):
                        failures.append(f"{label}: resolve_issuer gave {_short(resolved)}")
        assert not failures, (
            f"{len(failures)} malformed variant(s) of case {case.id!r} broke the adapter:\n  "
            + "\n  ".join(failures[:25])
            + ("\n  ..." if len(failures) > 25 else "")
        )

    def check_email_verified(self, case: Good) -> None:
        """Without the IdP's assertion the e-mail is not verified (never default to true)."""
        claim = self.email_verified_claim
        assert claim is not None
        claims = {k: v for k, v in copy.deepcopy(dict(case.claims)).items() if k != claim}
        userinfo = _copy(case.userinfo)
        if userinfo is not None:
            userinfo.pop(claim, None)
        adapter = self.build(self._options_of(case.options))
        try:
            identity = adapter.identity(claims, userinfo)
        except AdapterError:
            return  # refusing an unverified e-mail is allowed
        assert identity.email_verified is False, (
            f"case {case.id!r} without the {claim!r} claim still gives email_verified="
            f"{identity.email_verified!r}: never default it to true"
        )

    # ---- optional capabilities ---------------------------------------------------------

    def check_authorization_params(self) -> None:
        """Extra authorization parameters: a str -> str mapping that never names one the
        gateway sets itself (the adapter's value would be silently dropped)."""
        adapter = self.build(self.options)
        if not isinstance(adapter, AuthorizationParams):
            return
        method = type(adapter).authorization_params
        _assert_params(method, ["login_hint"], f"{_name(type(adapter))}.authorization_params")
        assert not inspect.iscoroutinefunction(method), "authorization_params must be synchronous"
        for hint in (None, "person@example.org"):
            params = adapter.authorization_params(hint)
            assert isinstance(params, Mapping), (
                f"authorization_params({hint!r}) returned {_short(params)}, not a mapping"
            )
            bad = {
                k: v for k, v in params.items() if not (isinstance(k, str) and isinstance(v, str))
            }
            assert not bad, f"authorization_params({hint!r}): keys and values must be str: {bad}"
            owned = sorted(set(params) & GATEWAY_AUTHORIZATION_PARAMS)
            assert not owned, (
                f"authorization_params({hint!r}) sets {owned}, which the gateway sets itself"
            )

    def check_resolve_issuer(self) -> None:
        """An issuer resolver never accepts a foreign issuer just because the token says so
        (neither in the ID token nor as the ``iss`` response parameter)."""
        adapter = self.build(self.options)
        halves = [hasattr(adapter, m) for m in ("resolve_issuer", "accepts_issuer")]
        assert all(halves) or not any(halves), (
            "IssuerResolver needs both resolve_issuer and accepts_issuer; with one of them "
            "the gateway does not use either"
        )
        if not isinstance(adapter, IssuerResolver):
            return
        for case in self.good:
            configured = case.issuer or self.issuer
            assert not adapter.accepts_issuer(configured, FOREIGN_ISSUER), (
                f"accepts_issuer({configured!r}, {FOREIGN_ISSUER!r}) accepts a foreign issuer"
            )
        method = type(adapter).resolve_issuer
        _assert_params(method, ["configured", "claims"], f"{_name(type(adapter))}.resolve_issuer")
        assert not inspect.iscoroutinefunction(method), "resolve_issuer must be synchronous"
        for case in self.good:
            configured = case.issuer or self.issuer
            forged = {**copy.deepcopy(dict(case.claims)), "iss": FOREIGN_ISSUER}
            resolved = adapter.resolve_issuer(configured, forged)
            assert isinstance(resolved, str), f"resolve_issuer returned {_short(resolved)}"
            assert resolved != FOREIGN_ISSUER, (
                f"resolve_issuer({configured!r}, claims of {case.id!r} with iss "
                f"{FOREIGN_ISSUER!r}) accepts that foreign issuer"
            )

    def check_enrich(self, case: Good) -> None:
        """``enrich`` is async, and whatever the API answers it returns an Identity of the
        same person (same idp, issuer, subject) that keeps the invariants, or raises
        AdapterError; with no access token it must not crash either."""
        adapter = self.build(self._options_of(case.options))
        if not isinstance(adapter, IdentityEnricher):
            return
        method = type(adapter).enrich
        _assert_params(
            method, ["identity", "access_token", "http"], f"{_name(type(adapter))}.enrich"
        )
        assert inspect.iscoroutinefunction(method), "enrich must be an async def"
        identity = adapter.identity(copy.deepcopy(dict(case.claims)), _copy(case.userinfo))
        failures: list[str] = []
        runs: list[tuple[str, str | None, Any]] = [("no-access-token", None, {})]
        runs += [(label, "conformance-access-token", answer) for label, answer in ENRICH_ANSWERS]
        for label, token, answer in runs:
            http = _FakeHttp(answer)
            try:
                enriched = _run(adapter.enrich(identity, token, http))
            except AdapterError as exc:
                problem = _refusal_problem(exc)
                if problem:
                    failures.append(f"{label}: {problem}")
                continue
            except Exception as exc:
                failures.append(f"{label}: {_exc(exc)} leaked")
                continue
            problems = identity_problems(enriched, self.idp_id)
            if not problems and isinstance(enriched, Identity):
                key = (enriched.idp, enriched.issuer, enriched.subject)
                if key != (identity.idp, identity.issuer, identity.subject):
                    problems.append(f"changed the person's key to {key}")
            if problems:
                failures.append(f"{label}: {'; '.join(problems)}")
        assert not failures, f"enrich (case {case.id!r}):\n  " + "\n  ".join(failures)


# ---- helpers ---------------------------------------------------------------------------


class _FakeHttp:
    """The gateway's JSON client as an enricher sees it, answering every GET alike."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls = 0

    async def get_json(
        self, url: str, headers: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> Any:
        self.calls += 1
        assert self.calls <= MAX_ENRICH_CALLS, f"enrich made over {MAX_ENRICH_CALLS} requests"
        return copy.deepcopy(self.answer)


def _run(coro: Any) -> Any:
    """Run a coroutine to completion, also from inside a running event loop (async tests)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _mutations(
    claims: Mapping[str, Any], userinfo: Mapping[str, Any] | None
) -> Iterable[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(label, claims, userinfo) with one claim missing or replaced by a wrong value."""
    for where, source in (("claims", claims), ("userinfo", userinfo)):
        if source is None:
            continue
        for key in source:
            if key in GATEWAY_CHECKED_CLAIMS or (where == "userinfo" and key == "sub"):
                continue  # the gateway guarantees these (userinfo's sub equals the token's)
            paths: list[tuple[str, ...]] = [(key,)]
            if isinstance(source[key], Mapping):
                paths += [(key, inner) for inner in source[key]]
            for path in paths:
                variants: list[tuple[str, Any]] = [("missing", _MISSING), *WRONG_VALUES]
                for name, value in variants:
                    new_claims, new_userinfo = copy.deepcopy(dict(claims)), _copy(userinfo)
                    target = new_claims if where == "claims" else new_userinfo
                    assert target is not None
                    _set(target, path, value)
                    label = f"{where}[{']['.join(repr(p) for p in path)}] {name}"
                    yield label, new_claims, new_userinfo
    # userinfo disagreeing in type with every token claim (the adapter decides who wins)
    sub = claims.get("sub")
    conflicting = {k: 12345 for k in claims if k not in GATEWAY_CHECKED_CLAIMS and k != "sub"}
    yield "userinfo conflicting", copy.deepcopy(dict(claims)), {**conflicting, "sub": sub}


_MISSING = object()


def _set(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = target
    for part in path[:-1]:
        node = node[part]
    if value is _MISSING:
        del node[path[-1]]
    else:
        node[path[-1]] = copy.deepcopy(value) if isinstance(value, list | dict) else value


def _audit_reason(exc: AdapterError) -> str:
    return "policy_denied" if isinstance(exc, AccessDenied) else "claims_invalid"


def _check_refusal(exc: AdapterError, case_id: str) -> None:
    problem = _refusal_problem(exc)
    assert not problem, f"case {case_id!r}: {problem}"


def _refusal_problem(exc: AdapterError) -> str | None:
    """An AdapterError the audit log can use: a short str reason and a message."""
    reason = getattr(exc, "reason", None)
    if not isinstance(reason, str) or not reason or len(reason) > 100:
        return f"{type(exc).__name__} needs a short reason code, got {_short(reason)}"
    if not str(exc):
        return f"{type(exc).__name__}({reason!r}) has no message for operators"
    return None


def _storable(value: Any, path: str, depth: int = 0) -> str | None:
    """Problem with a value that must go to MongoDB and the JSON audit log, if any."""
    if depth > 20:
        return f"{path} is nested too deeply"
    if value is None or isinstance(value, str | bool | int | float):
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            problem = _storable(item, f"{path}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a non-string key {key!r}"
            problem = _storable(item, f"{path}[{key!r}]", depth + 1)
            if problem:
                return problem
        return None
    return f"{path} holds a {type(value).__name__}, which cannot be stored (JSON types only)"


def _nested_models(model: type[BaseModel]) -> list[tuple[str, type[BaseModel]]]:
    out: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        for found in _models_in(info.annotation):
            out.append((name, found))
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _assert_params(function: Any, names: list[str], what: str) -> None:
    """The method takes the contract's arguments positionally (the gateway passes them so)."""
    params = list(inspect.signature(function).parameters.values())[1:]  # drop self
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    required_extra = [p.name for p in positional[len(names) :] if p.default is p.empty] + [
        p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]
    assert (len(positional) >= len(names) or varargs) and not required_extra, (
        f"{what} must accept ({', '.join(names)}), has ({', '.join(p.name for p in params)})"
    )


def _bind(method: Callable[[Any], None], arg: Any) -> Callable[[], None]:
    return lambda: method(arg)


def _copy(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else copy.deepcopy(dict(value))


def _same(got: Any, want: Any) -> bool:
    if isinstance(got, tuple) and isinstance(want, list):
        want = tuple(want)
    return bool(got == want)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _exc(exc: BaseException) -> str:
    """``TypeError('...') at file.py:12``: where a leaked exception came from."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}({_short(str(exc))}){where}"


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
