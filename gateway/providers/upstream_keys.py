"""Provider API keys: read once from the environment and an optional `.env` file.

Keys live only in the process environment or in a `.env` file beside the gateway (or the file
named by GATEWAY_ENV_FILE); providers.toml names the variable, never the value. A real
environment variable always wins over the same name in `.env`, so a deployment can override a
developer's file without editing it.

This module must never log, print or repr a key: `Secrets.__repr__` shows only which variable
names are set, and `all_values()` exists so that a log processor can mask the values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from gateway.config import ProviderConfig, ProvidersFile
from gateway.errors import ConfigError

__all__ = ["ENV_FILE_VARIABLE", "Secrets", "load_dotenv"]

ENV_FILE_VARIABLE = "GATEWAY_ENV_FILE"
DEFAULT_ENV_FILE = Path(".env")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _parse_value(raw: str, where: str) -> str:
    raw = raw.strip()
    if raw.startswith("'"):
        end = raw.find("'", 1)
        if end < 0:
            raise ConfigError(f"{where}: unterminated single-quoted value")
        body, rest = raw[1:end], raw[end + 1 :]
    elif raw.startswith('"'):
        out: list[str] = []
        index = 1
        while True:
            if index >= len(raw):
                raise ConfigError(f"{where}: unterminated double-quoted value")
            char = raw[index]
            if char == "\\" and index + 1 < len(raw):
                escaped = raw[index + 1]
                out.append(_ESCAPES.get(escaped, "\\" + escaped))
                index += 2
                continue
            if char == '"':
                break
            out.append(char)
            index += 1
        body, rest = "".join(out), raw[index + 1 :]
    else:
        # Unquoted: a '#' after whitespace starts a comment (so "abc#def" keeps its '#').
        match = re.search(r"\s#", raw)
        return (raw[: match.start()] if match else raw).strip()
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise ConfigError(f"{where}: unexpected text after the closing quote")
    return body


def load_dotenv(path: Path | None) -> dict[str, str]:
    """The `KEY=VALUE` pairs of a `.env` file (an empty dict for `None`).

    Understands blank lines, `# comments`, an optional `export ` prefix, and values in single
    quotes (taken literally), double quotes (with \\n, \\t, \\", \\\\ escapes) or bare (trailing
    ` # comment` dropped). A later line wins over an earlier one. It only reads the file: it
    does not touch os.environ, and deciding precedence is the caller's job (`Secrets` lets the
    real environment win). A missing file or a malformed line is a ConfigError naming it.
    """
    if path is None:
        return {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"env file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"env file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{at}: not UTF-8 text (byte {data[exc.start]:#04x})") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{number}"
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export ") or stripped.startswith("export\t"):
            stripped = stripped[len("export") :].lstrip()
        name, sep, raw = stripped.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"{where}: expected NAME=VALUE")
        if not _NAME_RE.match(name):
            raise ConfigError(f"{where}: {name!r} is not a valid variable name")
        values[name] = _parse_value(raw, where)
    return values


class Secrets:
    """The key of every provider that declares one, from the environment and `.env`.

    Build it once at start-up with `Secrets.from_environment(providers)`. A variable that is
    unset or empty counts as missing: a provider that requires its key is then UNCONFIGURED
    and must never be called.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        """`values` maps variable names to keys; surrounding whitespace is removed (a key
        pasted with a trailing newline still works) and empty values are dropped, so
        `FOO_API_KEY=" "` counts as unset rather than being sent."""
        stripped = {name: value.strip() for name, value in values.items()}
        self._values = {name: value for name, value in stripped.items() if value}

    @classmethod
    def from_environment(
        cls,
        providers: ProvidersFile | Iterable[ProviderConfig],
        environ: Mapping[str, str] | None = None,
        *,
        default_env_file: Path = DEFAULT_ENV_FILE,
    ) -> Secrets:
        """Keys for `providers`, from `environ` (default os.environ) over the `.env` file.

        The file is the one named by GATEWAY_ENV_FILE (which must exist), else
        `default_env_file` if it exists. Only the variables that some provider's `auth.env`
        names are kept, so nothing else from the environment is treated as a secret.
        """
        environ = os.environ if environ is None else environ
        listed = providers.providers if isinstance(providers, ProvidersFile) else providers
        names = {p.auth.env for p in listed if p.auth.env is not None}
        named_file = environ.get(ENV_FILE_VARIABLE)
        if named_file:
            if not Path(named_file).exists():
                raise ConfigError(f"{ENV_FILE_VARIABLE}: env file {named_file} does not exist")
            dotenv = load_dotenv(Path(named_file))
        elif default_env_file.is_file():
            dotenv = load_dotenv(default_env_file)
        else:
            dotenv = {}
        values: dict[str, str] = {}
        for name in names:
            value = (environ.get(name) or "").strip() or (dotenv.get(name) or "").strip()
            if value:
                values[name] = value
        return cls(values)

    def key_for(self, provider: ProviderConfig) -> str | None:
        """The key to send: the variable's value, else `auth.default` when the key is
        optional, else None (no auth, or a required key that is missing)."""
        auth = provider.auth
        if auth.kind == "none" or auth.env is None:
            return None
        value = self._values.get(auth.env)
        if value is not None:
            return value
        return None if auth.required else auth.default

    def is_configured(self, provider: ProviderConfig) -> bool:
        """True when the provider needs no key or its key is set; False means UNCONFIGURED."""
        auth = provider.auth
        if not provider.requires_key or auth.env is None:
            return True
        return auth.env in self._values

    def key_set(self, provider: ProviderConfig) -> bool:
        """True only when the provider's key variable holds a value: what `keyConfigured`
        reports. An optional key left unset is False here, while `is_configured` stays True
        (the provider runs keyless, so it is not UNCONFIGURED)."""
        auth = provider.auth
        return auth.kind != "none" and auth.env is not None and auth.env in self._values

    def base_url_for(self, provider: ProviderConfig) -> str:
        """The provider's base_url with a path-segment key filled in. Holds a secret: never
        log it."""
        return provider.base_url_with_key(self.key_for(provider))

    def all_values(self) -> list[str]:
        """Every secret value held, longest first (so a masker replaces overlapping values
        whole). Defaults such as Ethplorer's public "freekey" are not secrets and are left out.
        """
        return sorted(set(self._values.values()), key=len, reverse=True)

    def __repr__(self) -> str:
        return f"Secrets(set={sorted(self._values)!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would copy the keys somewhere else (a cache, a subprocess, a crash dump).
        raise TypeError("Secrets cannot be pickled")
