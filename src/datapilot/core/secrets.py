"""Secrets at rest: data-source passwords, API keys of proxy models and other tokens given through the
API are stored encrypted, never in plain text.

The key is 32 random bytes, URL-safe base64 (the same shape as a Fernet key), taken from the
``DATAPILOT_SECRET_KEY`` environment variable or else from ``DATAPILOT_HOME/secret.key``, which is
created (mode 0600) the first time something is encrypted. Losing it makes the stored secrets
unreadable: back it up with the home, or keep it in the environment.

A stored secret is ``dpsec1:`` + a Fernet token (``cryptography``: AES-128-CBC with HMAC-SHA256,
authenticated, with a random IV); any other value is taken as a plain-text secret written before
encryption, which its store re-saves encrypted.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from datapilot.core.errors import ConfigError

ENV_KEY = "DATAPILOT_SECRET_KEY"
KEY_FILE = "secret.key"
PREFIX = "dpsec1:"
MASK = "********"


class SecretKeyError(ConfigError):
    """A stored secret cannot be read: its key is missing or is not the one it was encrypted with."""

    default_code = "secret_key"


def generate_key() -> str:
    """A new key, as ``DATAPILOT_SECRET_KEY`` or the key file hold it."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def _decode_key(text: str, where: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) != 32:
        raise SecretKeyError(
            f"the secret key in {where} is not 32 bytes of URL-safe base64: restore the key file, or set "
            f"{ENV_KEY} to the key the secrets were stored with (a new one: "
            f'python -c "from datapilot.core.secrets import generate_key; print(generate_key())")'
        )
    return raw


def is_encrypted(value: str) -> bool:
    return value.startswith(PREFIX)


class SecretBox:
    """Encrypts and decrypts stored secrets with the key of one home (or of the environment).

    The key is read on first use; ``encrypt`` creates the key file when there is neither a key file
    nor ``DATAPILOT_SECRET_KEY``, ``decrypt`` never does (a new key could not read old secrets)."""

    def __init__(self, home: Path | None) -> None:
        self.home = home
        self._key: bytes | None = None
        self._lock = threading.Lock()

    @classmethod
    def at_home(cls, home: Path) -> SecretBox:
        return cls(home)

    @property
    def key_path(self) -> Path | None:
        return None if self.home is None else self.home / KEY_FILE

    def _where(self) -> str:
        return f"{ENV_KEY} or {self.key_path}" if self.key_path is not None else ENV_KEY

    def _load(self, *, create: bool) -> bytes:
        with self._lock:
            if self._key is not None:
                return self._key
            env = os.environ.get(ENV_KEY)
            if env:
                self._key = _decode_key(env, ENV_KEY)
                return self._key
            path = self.key_path
            if path is None:
                raise SecretKeyError(f"no secret key: set {ENV_KEY} (this store has no DATAPILOT_HOME to keep one in)")
            if not path.exists():
                if not create:
                    raise SecretKeyError(
                        f"stored secrets are encrypted but the key file {path} is missing: restore it from a "
                        f"backup, or set {ENV_KEY} to the key they were stored with"
                    )
                self._create(path)
            try:
                text = path.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as e:
                raise SecretKeyError(
                    f"cannot read the secret key file {path} ({e}): restore it or set {ENV_KEY}"
                ) from None
            self._key = _decode_key(text, str(path))
            return self._key

    @staticmethod
    def _create(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(generate_key() + "\n")
        os.chmod(path, 0o600)  # whatever the umask

    def encrypt(self, plain: str) -> str:
        token = Fernet(base64.urlsafe_b64encode(self._load(create=True))).encrypt(plain.encode("utf-8"))
        return PREFIX + token.decode("ascii")

    def decrypt(self, stored: str, *, what: str = "a stored secret") -> str:
        """The plain text of ``stored``; a value without the ``dpsec1:`` prefix is returned as it is
        (plain text from before encryption: its store re-saves it encrypted)."""
        if not is_encrypted(stored):
            return stored
        fernet = Fernet(base64.urlsafe_b64encode(self._load(create=False)))
        try:
            return fernet.decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError):
            raise SecretKeyError(
                f"{what} cannot be decrypted with the current secret key ({self._where()}): restore the key "
                f"file it was stored with, or set {ENV_KEY} to that key (or, if the value is damaged, set it again)"
            ) from None


_SECRET_KEYS = frozenset({"password", "passwd", "api_key", "api_keys", "apikey", "token", "secret", "access_token"})
_SECRET_SUFFIXES = ("_password", "_api_key", "_token", "_secret")


def _secret_name(key: str) -> bool:
    k = key.lower()
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def mask_url(url: str) -> str:
    """``url`` with the password of its user-info (``scheme://user:PASSWORD@host``) masked."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{MASK}@{hostport}{slash}{tail}"


def mask_secrets(value: object, key: str = "") -> object:
    """A JSON-like value (a settings dump) with every secret masked: values under secret-sounding keys
    (``password``, ``api_key``, ``*_token``...) and passwords inside URLs."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if isinstance(value, str):
        if value and _secret_name(key):
            return MASK
        return mask_url(value) if "://" in value else value
    return value
