"""Provenance snapshot taken at ``labfolio.init``: what code, where, with what, how started.

``capture_snapshot()`` returns a JSON-ready ``provenance`` dict with five sections (git, machine,
python, invocation, env) and the blobs worth keeping as content-addressed artifacts (the
uncommitted diff, the full package list, the entry script's source).

Two promises shape this module:

- It never raises and never hangs ``init``. Every section is built behind its own guard; a part
  that fails is recorded as ``{"error": "..."}`` in its section. git and GPU probes run in daemon
  threads with deadlines, so a huge repository or a wedged driver costs seconds, not the run.
- It never stores a secret. Environment variables are taken from an allow-list only, and even an
  allowed one is withheld when its value looks like a credential. Remote and argv URLs lose
  their credentials; argv values of ``--token``-like flags are replaced by ``<redacted>``.

Nothing here imports torch or any other heavy package: versions come from installed metadata.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from labfolio.distributed import distributed_info
from labfolio.sysmetrics import describe_gpus

from .settings import find_project_root

__all__ = [
    "ALLOWED_ENV_PREFIXES",
    "ALLOWED_ENV_VARS",
    "KEY_PACKAGES",
    "Attachment",
    "Snapshot",
    "capture_snapshot",
    "find_project_root",
    "redact_argv",
    "strip_url_credentials",
]

MAX_DIFF_BYTES = 5 * 1024 * 1024  # a larger diff is cut here; the cut is noted in provenance
MAX_SOURCE_BYTES = 2 * 1024 * 1024  # a larger entry script is hashed but not attached
MAX_LISTED_PATHS = 100  # changed/untracked paths listed in provenance (all are counted)
GIT_COMMAND_TIMEOUT_S = 2.0  # one git call; a slow one means a huge tree, not a useful wait
GIT_SECTION_BUDGET_S = 5.0  # all git calls together
MACHINE_SECTION_BUDGET_S = 5.0  # NVML init or nvidia-smi can stall on a broken driver
REDACTED = "<redacted>"

# Names whose values describe how a run was launched and can change its results, and that no
# launcher uses to carry credentials.
ALLOWED_ENV_VARS = frozenset({
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_LAUNCH_BLOCKING", "CUDA_MODULE_LOADING",
    "CUBLAS_WORKSPACE_CONFIG", "CUDNN_LOGINFO_DBG",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "TOKENIZERS_PARALLELISM", "PYTHONHASHSEED", "PYTHONOPTIMIZE",
    "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
    "MASTER_ADDR", "MASTER_PORT",
    "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_JOB_PARTITION", "SLURM_NODELIST",
    "SLURM_JOB_NODELIST", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID",
    "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_GPUS_ON_NODE",
    "HOSTNAME", "CONDA_DEFAULT_ENV",
    "LABFOLIO_MACHINE", "LABFOLIO_EXPERIMENT", "LABFOLIO_VARIANT", "LABFOLIO_SEED",
})
# Families of framework tuning knobs (NCCL_P2P_DISABLE, PYTORCH_CUDA_ALLOC_CONF,
# TORCH_CUDNN_V8_API_ENABLED, ...). Names in them are still screened for secret-like words.
ALLOWED_ENV_PREFIXES = ("NCCL_", "TORCH_", "TORCHINDUCTOR_", "PYTORCH_", "CUBLAS_", "CUDNN_")

# Distributions whose versions are worth seeing at a glance (all others are in packages.txt).
KEY_PACKAGES = (
    "labfolio", "numpy", "scipy", "pandas", "scikit-learn", "torch", "torchvision", "torchaudio",
    "triton", "jax", "jaxlib", "tensorflow", "transformers", "tokenizers", "datasets",
    "accelerate", "peft", "deepspeed", "lightning", "pytorch-lightning", "timm", "einops",
    "xformers", "flash-attn", "safetensors", "sqlalchemy", "ray", "nvidia-ml-py", "psutil",
)

_SECRET_NAME_WORDS = re.compile(
    r"TOKEN|SECRET|PASSW|PWD|CREDENTIAL|AUTH|PRIVATE|SESSION|COOKIE|SIGNATURE|KEY", re.IGNORECASE
)
# Shapes of credentials that are unmistakable wherever they appear.
_KNOWN_SECRET_SHAPES = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s@]+@"  # any URL carrying user info
    r"|\b(?:gh[pousr]_|github_pat_)[A-Za-z0-9_]{20,}"  # GitHub
    r"|\bhf_[A-Za-z0-9]{20,}"  # Hugging Face
    r"|\bsk-[A-Za-z0-9_-]{20,}"  # OpenAI-style
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|\bglpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key id
    r"|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # JWT
    r"|-----BEGIN [A-Z ]*PRIVATE KEY"
)
_VALUE_SEPARATORS = re.compile(r"[\s,;:@/.=_+\-]+")
# Words that make a command-line flag's value secret; matched against whole words of the flag
# (split at - _ . + ~) so that e.g. --tokenizer and --author are left alone.
_SECRET_FLAG_WORDS = frozenset({
    "token", "secret", "password", "passwd", "pwd", "apikey", "credential", "credentials", "auth",
})
_SECRET_FLAG_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"),
                                ("secret", "key"), ("auth", "key")})
_WEB_SCHEMES = frozenset({"http", "https", "ftp", "ftps", "ws", "wss", "git+http", "git+https"})
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


@dataclass(frozen=True)
class Attachment:
    """A blob to store as a content-addressed artifact of the run."""

    name: str  # file name to store it under, e.g. "git.diff", "packages.txt", "train.py"
    kind: str  # "git_diff" | "packages" | "source"
    data: bytes


@dataclass(frozen=True)
class Snapshot:
    """Provenance of one run as captured at init."""

    provenance: dict  # JSON-serialisable; sections: git, machine, python, invocation, env
    attachments: tuple[Attachment, ...]


# -- public helpers ----------------------------------------------------------------------------


def strip_url_credentials(url: str) -> str:
    """``url`` without credentials.

    Web URLs (https, ...) lose all user info and their query string, because hosts put tokens in
    either place (``https://TOKEN@github.com``). Other schemes (ssh, postgresql, ...) keep the
    user name, which is needed to reach the host and is not a secret, and lose the password.
    Strings that are not URLs, such as scp-style ``git@host:org/repo``, are returned unchanged.
    """
    try:
        parts = urlsplit(url)
        if not parts.scheme or "@" not in parts.netloc:
            if parts.scheme.lower() in _WEB_SCHEMES and parts.query:
                return urlunsplit(parts._replace(query="", fragment=""))
            return url
        userinfo, _, hostport = parts.netloc.rpartition("@")
        if parts.scheme.lower() in _WEB_SCHEMES:
            return urlunsplit(parts._replace(netloc=hostport, query="", fragment=""))
        user = userinfo.partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}@{hostport}" if user else hostport))
    except ValueError:
        # Unparseable (e.g. a malformed IPv6 host): drop anything between "//" and "@".
        return re.sub(r"//[^/\s]*@", "//", url)


def redact_argv(argv: list[str]) -> list[str]:
    """``argv`` with values of secret-named flags replaced and URL credentials stripped.

    ``--api-key X``, ``--token=X``, ``--db-password X`` and ``wandb.api_key=X`` keep the key and
    lose the value.
    Other values are kept as they are, except for credential-shaped strings (``ghp_...``,
    ``hf_...``, URLs with user info), because a path or run id must survive intact.
    """
    out: list[str] = []
    hide_next = False
    for arg in argv:
        arg = str(arg)
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        key, eq, _ = arg.partition("=")
        # Both `--api-key=X` and Hydra-style `wandb.api_key=X` name their value with a key.
        if eq and _is_secret_key(key):
            out.append(f"{key}={REDACTED}")
            continue
        if not eq and arg.startswith("-") and _is_secret_key(arg):
            out.append(arg)
            hide_next = True
            continue
        arg = _URL_IN_TEXT.sub(lambda m: strip_url_credentials(m.group(0)), arg)
        # URLs were made safe above; what remains is checked for credential shapes.
        outside_urls = _URL_IN_TEXT.sub(" ", arg)
        out.append(REDACTED if _KNOWN_SECRET_SHAPES.search(outside_urls) else arg)
    return out


def _is_secret_key(key: str) -> bool:
    words = [w for w in re.split(r"[-_.+~]+", key.lower()) if w]
    if any(w in _SECRET_FLAG_WORDS or w.endswith(("token", "password", "secret")) for w in words):
        return True
    return any(pair in _SECRET_FLAG_PAIRS for pair in zip(words, words[1:]))


# -- the snapshot ------------------------------------------------------------------------------


def capture_snapshot(
    *,
    argv: list[str] | None = None,
    cwd: str | None = None,
    environ: Mapping[str, str] | None = None,
    machine_name: str | None = None,
) -> Snapshot:
    """Capture provenance for a run starting now. Never raises.

    ``argv``/``cwd``/``environ`` default to this process's; ``machine_name`` (else env
    ``LABFOLIO_MACHINE``) is the short name a lab uses for this host, stored beside the hostname.
    """
    try:
        return _capture(argv=argv, cwd=cwd, environ=environ, machine_name=machine_name)
    except Exception as exc:  # the guards below should make this unreachable; belt and braces
        error = {"error": _describe_error(exc)}
        sections = ("git", "machine", "python", "invocation", "env")
        return Snapshot(provenance={s: dict(error) for s in sections}, attachments=())


def _capture(*, argv, cwd, environ, machine_name) -> Snapshot:
    started_at = datetime.now(timezone.utc)
    argv_given = argv is not None
    argv = [str(a) for a in (sys.argv if argv is None else argv)]
    cwd = os.getcwd() if cwd is None else os.fspath(cwd)
    env = os.environ if environ is None else environ
    attachments: list[Attachment] = []

    # git and GPU probes wait on subprocesses/drivers, so they run while this thread reads
    # package metadata; each gets a deadline so nothing here can hold up init for long.
    git_result = _in_background("git", lambda: _capture_git(cwd), GIT_SECTION_BUDGET_S + 1.0)
    machine_result = _in_background(
        "machine", lambda: _capture_machine(env, machine_name), MACHINE_SECTION_BUDGET_S
    )
    python_section = _guarded(lambda: _capture_python(attachments))
    invocation = _guarded(
        lambda: _capture_invocation(argv, argv_given, cwd, env, started_at, attachments)
    )
    env_section = _guarded(lambda: _capture_env(env))
    git_section, git_attachments = git_result()
    machine_section, _ = machine_result()
    attachments.extend(git_attachments)

    provenance = {
        "git": git_section,
        "machine": machine_section,
        "python": python_section,
        "invocation": invocation,
        "env": env_section,
    }
    # Round-trip so the promise "JSON-serialisable" holds even if a value slipped through as a
    # non-JSON type; anything odd becomes its str().
    provenance = json.loads(json.dumps(provenance, default=str))
    return Snapshot(provenance=provenance, attachments=tuple(attachments))


def _describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


def _guarded(build: Callable[[], dict]) -> dict:
    try:
        return build()
    except Exception as exc:
        return {"error": _describe_error(exc)}


def _in_background(name: str, build: Callable[[], object], budget_s: float):
    """Run ``build`` in a daemon thread; the returned callable waits up to ``budget_s``.

    Results are (section, attachments) pairs; a plain dict result means no attachments.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = build()
        except Exception as exc:
            box["result"] = {"error": _describe_error(exc)}

    thread = threading.Thread(target=target, name=f"labfolio-capture-{name}", daemon=True)
    started = time.monotonic()
    thread.start()

    def result() -> tuple[dict, list[Attachment]]:
        thread.join(max(0.0, budget_s - (time.monotonic() - started)))
        value = box.get("result")
        if value is None:
            return {"error": f"{name} capture did not finish within {budget_s:g} s; skipped"}, []
        if isinstance(value, tuple):
            return value
        return value, []

    return result


# -- git ---------------------------------------------------------------------------------------


class _GitFailed(Exception):
    pass


class _Git:
    """Runs read-only git commands in ``cwd`` under one shared deadline."""

    def __init__(self, cwd: str, budget_s: float) -> None:
        self.cwd = cwd
        self.deadline = time.monotonic() + budget_s
        self.env = {
            **os.environ,
            "LC_ALL": "C",  # stable, parseable messages
            "GIT_TERMINAL_PROMPT": "0",  # never wait for a password
            "GIT_OPTIONAL_LOCKS": "0",  # never take index.lock under a running training job
        }

    def _argv(self, args: list[str]) -> list[str]:
        return ["git", "-c", "core.quotepath=off", "-c", "color.ui=false", *args]

    def _timeout(self, args: list[str]) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _GitFailed(f"git ran out of its {GIT_SECTION_BUDGET_S:g} s budget before "
                             f"`git {args[0]}`")
        return min(GIT_COMMAND_TIMEOUT_S, remaining)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        args_list = list(args)
        try:
            return subprocess.run(
                self._argv(args_list), cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                capture_output=True, timeout=self._timeout(args_list),
            )
        except subprocess.TimeoutExpired:
            raise _GitFailed(f"`git {args_list[0]}` timed out") from None

    def text(self, *args: str) -> str | None:
        """stdout of a command that succeeded, else None."""
        done = self.run(*args)
        return done.stdout.decode("utf-8", "replace").strip() if done.returncode == 0 else None

    def capped(self, args: list[str], cap: int) -> tuple[bytes, bool]:
        """Up to ``cap`` bytes of stdout, without ever holding more in memory; (data, cut)."""
        proc = subprocess.Popen(
            self._argv(args), cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        killed_for_time = threading.Event()

        def kill_for_time() -> None:
            killed_for_time.set()
            proc.kill()

        timer = threading.Timer(self._timeout(args), kill_for_time)
        timer.start()
        try:
            data = proc.stdout.read(cap + 1)
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()  # we have all we keep; the rest of a huge diff is not needed
            proc.stdout.close()
            proc.wait()
        if killed_for_time.is_set():
            raise _GitFailed(f"`git {args[0]}` timed out")
        if len(data) <= cap and proc.returncode != 0:
            raise _GitFailed(f"`git {' '.join(args)}` exited with status {proc.returncode}")
        return data[:cap], len(data) > cap


def _capture_git(cwd: str) -> tuple[dict, list[Attachment]]:
    if shutil.which("git") is None:
        return {"present": False, "reason": "git is not installed (not on PATH)"}, []
    git = _Git(cwd, GIT_SECTION_BUDGET_S)
    section: dict = {"present": True}
    try:
        top = git.run("rev-parse", "--show-toplevel")
        if top.returncode != 0:
            message = top.stderr.decode("utf-8", "replace").strip()
            if "not a git repository" in message:
                return {"present": False, "reason": "not a git repository", "cwd": cwd}, []
            return {"present": False, "error": message[:1000] or "git rev-parse failed"}, []
        section["root"] = top.stdout.decode("utf-8", "replace").strip()
        _read_commit(git, section)
        _read_remotes(git, section)
        changed, untracked = _read_status(git, section)
        attachments = []
        if changed or untracked:
            attachments.append(_read_diff(git, section, changed, untracked))
        return section, attachments
    except _GitFailed as exc:
        section["error"] = str(exc)  # keep what was read before the failure
        return section, []


def _read_commit(git: _Git, section: dict) -> None:
    # NUL-separated so that a subject line cannot break the parse.
    log = git.text("log", "-1", "--format=%H%x00%h%x00%cI%x00%aI%x00%an%x00%ae%x00%s")
    section["branch"] = git.text("symbolic-ref", "--short", "-q", "HEAD") or None
    if not log:
        section["sha"] = None
        section["note"] = "the repository has no commits yet"
        return
    sha, short, committed, authored, author, email, subject = (log.split("\x00") + [""] * 7)[:7]
    section.update(
        sha=sha, short_sha=short, commit_time=committed, author_time=authored,
        author=author, author_email=email, subject=subject,
    )
    section["detached"] = section["branch"] is None
    tags = git.text("tag", "--points-at", "HEAD")
    section["tags"] = sorted(tags.split()) if tags else []
    section["describe"] = git.text("describe", "--tags", "--always", "--dirty")


def _read_remotes(git: _Git, section: dict) -> None:
    listing = git.text("config", "--get-regexp", r"^remote\..*\.url$") or ""
    remotes = {}
    for line in listing.splitlines():
        key, _, url = line.partition(" ")
        name = key[len("remote."):-len(".url")]
        remotes.setdefault(name, strip_url_credentials(url.strip()))
    section["remotes"] = remotes
    section["remote_url"] = remotes.get("origin") or next(iter(remotes.values()), None)


def _read_status(git: _Git, section: dict) -> tuple[list[str], list[str]]:
    done = git.run("status", "--porcelain=v1", "-z", "--untracked-files=normal")
    if done.returncode != 0:
        raise _GitFailed("`git status` failed: "
                         + done.stderr.decode("utf-8", "replace").strip()[:500])
    entries = done.stdout.decode("utf-8", "surrogateescape").split("\x00")
    changed, untracked = [], []
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        if code == "??":
            untracked.append(path)
        elif code != "!!":
            changed.append(f"{code.strip()} {path}")
            if "R" in code or "C" in code:
                i += 1  # renames and copies are followed by their source path
    # "dirty" follows git describe --dirty: tracked changes only. Untracked files are listed
    # separately because data, logs and checkpoints are often untracked on purpose.
    section["dirty"] = bool(changed)
    section["changed_count"] = len(changed)
    section["changed_files"] = changed[:MAX_LISTED_PATHS]
    section["untracked_count"] = len(untracked)
    section["untracked_files"] = untracked[:MAX_LISTED_PATHS]
    return changed, untracked


def _read_diff(git: _Git, section: dict, changed: list[str], untracked: list[str]) -> Attachment:
    base = section.get("sha")
    scope = "staged and unstaged" if base else "staged only, as there is no commit yet"
    header = [
        f"# Uncommitted changes in {section['root']} against "
        f"{base or 'an empty repository'}, tracked files ({scope}).",
        "# Apply with `git apply` on that commit.",
    ]
    if untracked:
        header.append(f"# Untracked files ({len(untracked)}; contents not captured):")
        header += [f"#   {path}" for path in untracked[:1000]]
        if len(untracked) > 1000:
            header.append(f"#   ... and {len(untracked) - 1000} more")
    body, truncated = b"", False
    if changed:
        diff_args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--binary"]
        # Without a commit there is no HEAD to diff against: staged changes are all there is.
        diff_args += [base] if base else ["--cached"]
        body, truncated = git.capped(diff_args, MAX_DIFF_BYTES)
    data = ("\n".join(header) + "\n\n").encode("utf-8", "surrogateescape") + body
    if truncated:
        data += (f"\n# labfolio: diff cut at {MAX_DIFF_BYTES} bytes; the rest was not "
                 f"captured.\n").encode()
    section["diff"] = {
        "attachment": "git.diff",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "truncated": truncated,
    }
    return Attachment(name="git.diff", kind="git_diff", data=data)


# -- machine -----------------------------------------------------------------------------------


_GIB = float(1 << 30)


def _capture_machine(env: Mapping[str, str], machine_name: str | None) -> dict:
    section: dict = {
        "hostname": socket.gethostname(),
        "name": machine_name or env.get("LABFOLIO_MACHINE") or None,
        "os": platform.system(),
        "os_release": platform.release(),
        "arch": platform.machine(),
    }
    for key, read in (
        ("distro", _distro_name),
        ("cpu_model", _cpu_model),
        ("ram_total_gb", _ram_total_gb),
    ):
        try:
            section[key] = read()
        except Exception as exc:
            section[key] = None
            section.setdefault("errors", {})[key] = _describe_error(exc)
    section["cpu_count"] = os.cpu_count()
    try:
        section["cpu_count_usable"] = len(os.sched_getaffinity(0))  # honours taskset/cgroups
    except (AttributeError, OSError):
        section["cpu_count_usable"] = section["cpu_count"]
    try:
        gpus, driver, source = describe_gpus()
    except Exception as exc:
        gpus, driver, source = [], None, None
        section.setdefault("errors", {})["gpus"] = _describe_error(exc)
    section.update(gpus=gpus, gpu_count=len(gpus), gpu_driver=driver, gpu_source=source)
    return section


def _distro_name() -> str | None:
    if sys.platform.startswith("linux"):
        try:
            return platform.freedesktop_os_release().get("PRETTY_NAME")
        except OSError:
            return None
    if sys.platform == "darwin":
        return f"macOS {platform.mac_ver()[0]}"
    return platform.platform(terse=True)


def _cpu_model() -> str | None:
    if sys.platform.startswith("linux"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                # x86 says "model name"; some ARM kernels only "Hardware" or "Model".
                if key.strip() in ("model name", "Hardware", "Model", "cpu model"):
                    return value.strip()
        return platform.machine() or None
    if sys.platform == "darwin":
        done = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                              timeout=1.0, text=True)
        return done.stdout.strip() or None
    # platform.processor() spawns `uname -p` on some systems, so it is only the last resort.
    return platform.processor() or None


def _ram_total_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / _GIB, 2)
    except (AttributeError, ValueError, OSError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return round(psutil.virtual_memory().total / _GIB, 2)


# -- python ------------------------------------------------------------------------------------


def _canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _name_and_version(dist: importlib.metadata.Distribution) -> tuple[str | None, str | None]:
    # Only the header of METADATA is read: dist.metadata parses the whole file, including long
    # descriptions, which made listing a few hundred packages cost tens of milliseconds.
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    if text is None:
        return dist.metadata["Name"], dist.version
    name = version = None
    for line in text.splitlines():
        if not line:
            break
        if line.startswith("Name:"):
            name = line[5:].strip()
        elif line.startswith("Version:"):
            version = line[8:].strip()
        if name and version:
            break
    return name, version


def _installed_packages() -> dict[str, tuple[str, str]]:
    """canonical name -> (display name, version) of every importable distribution."""
    import importlib.metadata  # costs tens of ms; paid at capture, not at `import labfolio`

    found: dict[str, tuple[str, str]] = {}
    for dist in importlib.metadata.distributions():
        try:
            name, version = _name_and_version(dist)
        except Exception:
            continue
        if name:
            # First on sys.path wins, as it does for the importer.
            found.setdefault(_canonical_name(name), (name, version or "unknown"))
    return found


def _torch_cuda_build() -> str | None:
    """CUDA version torch was built for, read from torch/version.py without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        version_file = Path(folder) / "version.py"
        if version_file.is_file():
            text = version_file.read_text(encoding="utf-8", errors="replace")
            match = re.search(r"^cuda\s*(?::[^=\n]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
            return match.group(1) if match else None
    return None


def _capture_python(attachments: list[Attachment]) -> dict:
    packages = _installed_packages()
    section: dict = {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "virtualenv": sys.prefix != sys.base_prefix,
        "packages": {
            name: packages[name][1] for name in KEY_PACKAGES if name in packages
        },
        "package_count": len(packages),
    }
    if "torch" in packages:
        try:
            section["torch_cuda"] = _torch_cuda_build()
        except Exception as exc:
            section["torch_cuda"] = None
            section["torch_cuda_error"] = _describe_error(exc)
    listing = "".join(
        f"{display}=={version}\n" for _, (display, version) in sorted(packages.items())
    ).encode("utf-8")
    attachments.append(Attachment(name="packages.txt", kind="packages", data=listing))
    section["packages_attachment"] = {
        "attachment": "packages.txt",
        "sha256": hashlib.sha256(listing).hexdigest(),
    }
    return section


# -- invocation --------------------------------------------------------------------------------


def _entry_script(argv: list[str], argv_given: bool, cwd: str) -> Path | None:
    candidates = []
    if not argv_given:
        # __main__.__file__ is right for `python -m pkg.mod` and for launchers that rewrite
        # argv; an explicit argv means the caller describes another process, so it wins.
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_file:
            candidates.append(main_file)
    if argv and argv[0] not in ("", "-c", "-m", "-"):
        candidates.append(argv[0])
    for candidate in candidates:
        path = Path(candidate)
        if not path.is_absolute():
            path = Path(cwd) / path
        if path.is_file():
            return path.resolve()
    return None


def _capture_invocation(argv: list[str], argv_given: bool, cwd: str, env: Mapping[str, str],
                        started_at: datetime, attachments: list[Attachment]) -> dict:
    section: dict = {
        "argv": redact_argv(argv),
        "cwd": cwd,
        "started_at": started_at.isoformat(),
        "pid": os.getpid(),
        "user": _user_name(env),
    }
    if not argv_given and getattr(sys, "orig_argv", None):
        section["interpreter_argv"] = redact_argv(list(sys.orig_argv))
    try:
        section["distributed"] = distributed_info(env).as_dict()
    except ValueError as exc:
        section["distributed"] = {"error": str(exc)}
    try:
        section["entry_script"] = _capture_entry_script(argv, argv_given, cwd, attachments)
    except Exception as exc:
        section["entry_script"] = {"error": _describe_error(exc)}
    return section


def _capture_entry_script(argv: list[str], argv_given: bool, cwd: str,
                          attachments: list[Attachment]) -> dict | None:
    path = _entry_script(argv, argv_given, cwd)
    if path is None:
        return None  # python -c, a REPL, or an embedded interpreter: no script to keep
    info: dict = {"path": str(path)}
    root = find_project_root(cwd)
    if path.is_relative_to(root):
        info["relpath"] = path.relative_to(root).as_posix()
    if "ipykernel" in path.name or "ipykernel" in path.parent.name:
        info["note"] = "started from a Jupyter kernel; the notebook itself is not captured"
        return info
    size = path.stat().st_size
    info["bytes"] = size
    if size > MAX_SOURCE_BYTES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        info["sha256"] = digest.hexdigest()
        info["note"] = f"larger than {MAX_SOURCE_BYTES} bytes; hashed but not attached"
        return info
    source = path.read_bytes()
    info["sha256"] = hashlib.sha256(source).hexdigest()
    info["attachment"] = path.name
    attachments.append(Attachment(name=path.name, kind="source", data=source))
    return info


def _user_name(env: Mapping[str, str]) -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        # Containers often run as a uid with no passwd entry.
        return env.get("USER") or env.get("USERNAME") or (
            str(os.getuid()) if hasattr(os, "getuid") else None
        )


# -- env ---------------------------------------------------------------------------------------


def _looks_like_secret(value: str) -> bool:
    """True for values shaped like credentials; errs on the side of withholding."""
    if _KNOWN_SECRET_SHAPES.search(value):
        return True
    for piece in _VALUE_SEPARATORS.split(value):
        has_digit = any(c.isdigit() for c in piece)
        has_lower = any(c.islower() for c in piece)
        has_upper = any(c.isupper() for c in piece)
        # Long unbroken alphanumerics are keys (40-hex API keys, base64); config values and
        # names are made of short words. GPU UUIDs survive because '-' splits them.
        if len(piece) >= 32 and has_digit and (has_lower or has_upper):
            return True
        if len(piece) >= 20 and has_digit and has_lower and has_upper:
            return True
    return False


def _env_name_allowed(name: str) -> bool:
    if name in ALLOWED_ENV_VARS:
        return True
    return name.startswith(ALLOWED_ENV_PREFIXES) and not _SECRET_NAME_WORDS.search(name)


def _capture_env(env: Mapping[str, str]) -> dict:
    kept, withheld = {}, []
    for name in sorted(env):
        if not _env_name_allowed(name):
            continue
        value = str(env[name])
        if _looks_like_secret(value):
            withheld.append(name)
        else:
            kept[name] = value
    return {"vars": kept, "withheld": withheld}
