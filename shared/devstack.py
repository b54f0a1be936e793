"""The dev stack descriptor: how operator commands find the stack ``tessera dev`` runs.

``tessera dev`` writes a small JSON file in a fixed per-user place (``TESSERA_DEV_STACK_FILE``,
else ``$XDG_STATE_HOME/tessera/dev-stack.json``, else ``~/.local/state/tessera/dev-stack.json``)
once every service answers, and removes it when it stops. It says where each service listens,
the public URL, where the dev secrets are and which databases the stack uses, so
``tessera token create``, ``tessera keys …`` and ``tessera tenant …`` work from any directory
without a URL or secret variable. A file left by a ``tessera dev`` that died is recognised by
its pid (and the process start time, so a reused pid is not mistaken for it) and ignored.

The file is written atomically (a temporary file renamed over it) with mode 0600: it names
the secret files and database URLs, never a secret's value.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.pki import OPERATOR
from shared.tls import TLS_DIR, TLS_VARIABLES, TlsFiles

DESCRIPTOR_VARIABLE = "TESSERA_DEV_STACK_FILE"
FORMAT_VERSION = 1


def state_dir(env: Mapping[str, str]) -> Path:
    """Tessera's per-user state directory (XDG base directory spec, with its default)."""
    base = env.get("XDG_STATE_HOME", "").strip()
    if not base or not Path(base).is_absolute():
        base = str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "tessera"


def descriptor_path(env: Mapping[str, str]) -> Path:
    """Where the running dev stack is described (``TESSERA_DEV_STACK_FILE`` overrides)."""
    explicit = env.get(DESCRIPTOR_VARIABLE, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    return state_dir(env) / "dev-stack.json"


def process_start(pid: int) -> str | None:
    """The start time of a process (clock ticks since boot, from /proc), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 is the start time; the command name (field 2) may hold spaces, so split after it.
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, started: str | None) -> bool:
    """Whether ``pid`` is running and, when ``started`` is known, is still the process that
    started then (not a later one given the same pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if started is None:
        return True
    now = process_start(pid)
    return now is None or now == started


@dataclass(frozen=True)
class DevStack:
    """What one running ``tessera dev`` tells operator commands."""

    pid: int
    directory: str  # where `tessera dev` was started
    public_url: str
    services: dict[str, str]  # service -> internal base URL
    secrets_dir: str | None  # the .tessera-dev/ directory, when it made or reused dev secrets
    # The internal PKI (``tessera pki init`` layout): operator commands present its operator
    # certificate.
    pki_dir: str | None = None
    # Variables an operator command may take from the stack when its own environment does not
    # set them: database URLs, AMQP names and secret *files* (never a secret's value).
    env: dict[str, str] = field(default_factory=dict)
    process_start: str | None = None
    version: int = FORMAT_VERSION

    def describe(self) -> str:
        """How messages name this stack: where it was started and its pid."""
        return f"the `tessera dev` started in {self.directory} (pid {self.pid})"

    def to_json(self) -> dict[str, Any]:
        """The descriptor file's content."""
        return asdict(self)

    @classmethod
    def from_json(cls, body: Any) -> DevStack:
        """A descriptor read back; ValueError (or KeyError / TypeError) for a file of another
        version or shape."""
        if not isinstance(body, dict) or body.get("version") != FORMAT_VERSION:
            raise ValueError("not a dev stack descriptor of this version")
        return cls(
            pid=int(body["pid"]),
            directory=str(body["directory"]),
            public_url=str(body["public_url"]),
            services={str(k): str(v) for k, v in dict(body["services"]).items()},
            secrets_dir=body.get("secrets_dir"),
            pki_dir=body.get("pki_dir"),
            env={str(k): str(v) for k, v in dict(body.get("env") or {}).items()},
            process_start=body.get("process_start"),
        )


def write_descriptor(path: Path, stack: DevStack) -> None:
    """Write ``stack`` to ``path`` atomically, readable by this user only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".dev-stack.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp creates it 0600
            json.dump(stack.to_json(), out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_descriptor(path: Path) -> DevStack | None:
    """The stack the file describes, or None when there is none or it is unreadable."""
    try:
        return DevStack.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_stack(env: Mapping[str, str]) -> DevStack | None:
    """The dev stack that is running now, or None (no file, or its process is gone)."""
    stack = read_descriptor(descriptor_path(env))
    if stack is None or not process_alive(stack.pid, stack.process_start):
        return None
    return stack


def remove_descriptor(path: Path, pid: int) -> None:
    """Remove the file if it still describes the stack of ``pid`` (never another's)."""
    stack = read_descriptor(path)
    if stack is not None and stack.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@dataclass(frozen=True)
class Endpoint:
    """Where an operator command sends its calls, and why there."""

    url: str
    source: str  # for messages: the variable, the dev stack, or the default


def service_endpoint(env: Mapping[str, str], service: str) -> Endpoint:
    """An operator command's URL for ``service``: ``TESSERA_<SERVICE>_URL`` when set, else the
    running dev stack's, else the default port on this machine."""
    from shared.settings import service_url

    name = f"TESSERA_{service.upper()}_URL"
    if env.get(name, "").strip():
        return Endpoint(service_url(env, service), f"from {name}")
    stack = running_stack(env)
    if stack is not None and service in stack.services:
        return Endpoint(stack.services[service].rstrip("/"), f"from {stack.describe()}")
    return Endpoint(
        service_url(env, service),
        f"the default: {name} is not set and no `tessera dev` is running"
        f" ({descriptor_path(env)} describes none)",
    )


def operator_tls(env: Mapping[str, str]) -> TlsFiles:
    """The operator's certificate for an operator command: ``TESSERA_TLS_DIR`` (or the
    ``TESSERA_TLS_*_FILE`` variables) when set, else the running dev stack's PKI."""
    from shared.settings import ConfigError

    if env.get(TLS_DIR, "").strip() or any(env.get(n, "").strip() for n in TLS_VARIABLES):
        return TlsFiles.from_env(env, OPERATOR)
    stack = running_stack(env)
    if stack is not None and stack.pki_dir:
        return TlsFiles.from_dir(Path(stack.pki_dir), OPERATOR)
    raise ConfigError(
        f"{TLS_DIR} is required but not set and no `tessera dev` is running: operator commands"
        " present the operator certificate of `tessera pki init DIR` (DIR/operator.pem)"
    )


DATABASE_NAMES = (
    "TESSERA_DATABASE_URL",
    "TESSERA_KEYS_DATABASE_URL",
    "TESSERA_ISSUER_DATABASE_URL",
    "TESSERA_REVOCATION_DATABASE_URL",
)


def with_stack_databases(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` completed with the running dev stack's database URLs when it names none
    (``tessera audit`` reads the services' databases directly)."""
    merged = dict(env)
    if any(merged.get(name, "").strip() for name in DATABASE_NAMES):
        return merged
    stack = running_stack(env)
    if stack is not None:
        merged.update({k: v for k, v in stack.env.items() if k in DATABASE_NAMES})
    return merged


SECRET_NAMES = ("TESSERA_KEK", "TESSERA_KEK_PREVIOUS", "TESSERA_TOKEN_PEPPER")


def with_stack_secrets(env: Mapping[str, str]) -> tuple[dict[str, str], DevStack | None]:
    """``env`` completed from the running dev stack for a command that opens a database with
    the stack's secrets (``tessera keys rewrap``): only when ``env`` sets no KEK itself, and
    then the database and every secret file come from the stack together, never mixed."""
    merged = dict(env)
    if merged.get("TESSERA_KEK", "").strip() or merged.get("TESSERA_KEK_FILE", "").strip():
        return merged, None
    stack = running_stack(env)
    if stack is None:
        return merged, None
    for name in SECRET_NAMES:
        merged.pop(name, None)
        merged.pop(f"{name}_FILE", None)
    merged.update(stack.env)
    if stack.pki_dir and not merged.get(TLS_DIR, "").strip():
        merged[TLS_DIR] = stack.pki_dir
    return merged, stack
