"""Provider keys: the .env parser, environment precedence, required/optional keys, no leaks."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from gateway.config import AuthSpec, ProviderConfig, ProvidersFile
from gateway.errors import ConfigError
from gateway.providers.upstream_keys import Secrets, load_dotenv


def provider(
    provider_id: str, auth: AuthSpec, base_url: str = "https://x.example"
) -> ProviderConfig:
    return ProviderConfig(
        id=provider_id, name=provider_id, categories=("MARKET_DATA",), base_url=base_url, auth=auth
    )


FREE = provider("free", AuthSpec())
NEEDS_KEY = provider("cmc", AuthSpec(kind="header", name="X-Key", env="CMC_KEY"))
OPTIONAL = provider("gecko", AuthSpec(kind="header", name="x-k", env="GECKO_KEY", required=False))
WITH_DEFAULT = provider(
    "ethplorer",
    AuthSpec(kind="query", name="apiKey", env="ETHPLORER_KEY", required=False, default="freekey"),
)
PATH_KEY = provider(
    "infura", AuthSpec(kind="path", env="INFURA_KEY"), "https://mainnet.example/v3/{key}"
)
ALL = [FREE, NEEDS_KEY, OPTIONAL, WITH_DEFAULT, PATH_KEY]


def env_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text)
    return path


# --- load_dotenv ----------------------------------------------------------------------------


def test_dotenv_syntax(tmp_path: Path) -> None:
    path = env_file(
        tmp_path,
        "# keys for local runs\n"
        "\n"
        "PLAIN=abc123\n"
        "export EXPORTED=yes\n"
        "  SPACED  =  padded value  \n"
        "COMMENTED=value # a comment\n"
        "HASH_INSIDE=abc#def\n"
        "SINGLE='literal \\n $HOME # not a comment'\n"
        'DOUBLE="line\\nbreak \\"quoted\\" back\\\\slash" # comment\n'
        "EMPTY=\n"
        "EQUALS=a=b=c\n"
        "PLAIN=later wins\n",
    )
    assert load_dotenv(path) == {
        "PLAIN": "later wins",
        "EXPORTED": "yes",
        "SPACED": "padded value",
        "COMMENTED": "value",
        "HASH_INSIDE": "abc#def",
        "SINGLE": "literal \\n $HOME # not a comment",
        "DOUBLE": 'line\nbreak "quoted" back\\slash',
        "EMPTY": "",
        "EQUALS": "a=b=c",
    }


def test_dotenv_none_is_empty() -> None:
    assert load_dotenv(None) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("OK=1\nno equals sign\n", ".env:2: expected NAME=VALUE"),
        ("1BAD=x\n", ".env:1: '1BAD' is not a valid variable name"),
        ("A='open\n", ".env:1: unterminated single-quoted value"),
        ('A="open\n', ".env:1: unterminated double-quoted value"),
        ('A="x" y\n', ".env:1: unexpected text after the closing quote"),
    ],
)
def test_dotenv_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_dotenv(env_file(tmp_path, text))
    assert message in str(caught.value)


def test_dotenv_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"A=1\n# comment\nB=caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_dotenv(path)
    assert str(caught.value) == f"{path}:3: not UTF-8 text (byte 0xe9)"


def test_dotenv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_dotenv(tmp_path / "nope.env")


def test_dotenv_does_not_touch_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ONLY_IN_FILE", raising=False)
    load_dotenv(env_file(tmp_path, "ONLY_IN_FILE=1\n"))
    assert "ONLY_IN_FILE" not in os.environ


# --- Secrets --------------------------------------------------------------------------------


def test_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    path = env_file(tmp_path, "CMC_KEY=from-file\nGECKO_KEY=gecko-from-file\n")
    environ = {"GATEWAY_ENV_FILE": str(path), "CMC_KEY": "from-environment"}
    secrets = Secrets.from_environment(ALL, environ)
    assert secrets.key_for(NEEDS_KEY) == "from-environment"
    assert secrets.key_for(OPTIONAL) == "gecko-from-file"


def test_empty_environment_value_falls_back_to_the_file(tmp_path: Path) -> None:
    path = env_file(tmp_path, "CMC_KEY=from-file\n")
    secrets = Secrets.from_environment(ALL, {"GATEWAY_ENV_FILE": str(path), "CMC_KEY": ""})
    assert secrets.key_for(NEEDS_KEY) == "from-file"


def test_default_env_file_is_used_only_if_it_exists(tmp_path: Path) -> None:
    path = env_file(tmp_path, "CMC_KEY=k\n")
    assert Secrets.from_environment(ALL, {}, default_env_file=path).key_for(NEEDS_KEY) == "k"
    missing = tmp_path / "absent.env"
    assert Secrets.from_environment(ALL, {}, default_env_file=missing).key_for(NEEDS_KEY) is None


def test_named_env_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Secrets.from_environment(ALL, {"GATEWAY_ENV_FILE": str(tmp_path / "nope")})
    assert str(caught.value) == f"GATEWAY_ENV_FILE: env file {tmp_path / 'nope'} does not exist"


def test_required_optional_and_default_keys() -> None:
    nothing = Secrets.from_environment(ALL, {}, default_env_file=Path("/nonexistent/.env"))
    assert nothing.key_for(FREE) is None and nothing.is_configured(FREE)
    # a required key that is missing: UNCONFIGURED
    assert nothing.key_for(NEEDS_KEY) is None and not nothing.is_configured(NEEDS_KEY)
    assert nothing.key_for(PATH_KEY) is None and not nothing.is_configured(PATH_KEY)
    # optional keys: configured without one; the default (if any) is sent instead
    assert nothing.key_for(OPTIONAL) is None and nothing.is_configured(OPTIONAL)
    assert nothing.key_for(WITH_DEFAULT) == "freekey" and nothing.is_configured(WITH_DEFAULT)

    keyed = Secrets({"CMC_KEY": "c", "ETHPLORER_KEY": "mine", "INFURA_KEY": "i/1"})
    assert keyed.key_for(NEEDS_KEY) == "c" and keyed.is_configured(NEEDS_KEY)
    assert keyed.key_for(WITH_DEFAULT) == "mine"
    assert keyed.base_url_for(PATH_KEY) == "https://mainnet.example/v3/i%2F1"
    assert keyed.base_url_for(FREE) == "https://x.example"


def test_only_variables_that_providers_name_are_kept() -> None:
    environ = {"CMC_KEY": "c", "HOME": "/root", "GATEWAY_PORT": "7860", "PATH": "/bin"}
    secrets = Secrets.from_environment(
        ProvidersFile(tuple(ALL)), environ, default_env_file=Path("/nonexistent/.env")
    )
    assert secrets.all_values() == ["c"]


def test_all_values_lists_set_keys_longest_first_without_defaults() -> None:
    secrets = Secrets({"CMC_KEY": "short", "GECKO_KEY": "much-longer-key", "EMPTY": ""})
    assert secrets.all_values() == ["much-longer-key", "short"]
    assert "freekey" not in Secrets({}).all_values()


def test_repr_shows_names_never_values() -> None:
    secrets = Secrets({"CMC_KEY": "sk-very-secret", "GECKO_KEY": "another-secret"})
    for text in (repr(secrets), str(secrets), f"{secrets}", f"{[secrets]}"):
        assert "secret" not in text.replace("Secrets", "")
        assert "CMC_KEY" in text and "GECKO_KEY" in text
    assert repr(secrets) == "Secrets(set=['CMC_KEY', 'GECKO_KEY'])"


def test_secrets_cannot_be_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secrets({"CMC_KEY": "sk-very-secret"}))


def test_blank_keys_count_as_unset_and_keys_are_trimmed(tmp_path: Path) -> None:
    provider = ProviderConfig(
        id="p",
        name="p",
        categories=("MARKET_DATA",),
        base_url="https://example.invalid",
        auth=AuthSpec(kind="header", name="x-key", env="P_KEY", required=True),
    )
    env = {"GATEWAY_ENV_FILE": str(tmp_path / "none.env")}
    (tmp_path / "none.env").write_text("")
    assert Secrets.from_environment([provider], {**env, "P_KEY": "   "}).key_for(provider) is None
    assert Secrets.from_environment([provider], {**env, "P_KEY": " k1\n"}).key_for(provider) == "k1"
