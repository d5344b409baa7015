"""Provenance capture: git state, secrets, entry script, packages, failure isolation."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import labfolio.capture as capture
from labfolio.capture import (
    Snapshot,
    capture_snapshot,
    find_project_root,
    redact_argv,
    strip_url_credentials,
)

GITHUB_TOKEN = "ghp_Xq7Lr2Pz9Kd4Wm1Ns8Vb3Tc6Hy5Ju0Ae2Fg4"
SSH_PASSWORD = "hunter2-sshpw"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Ada Lab", "-c", "user.email=ada@lab.example", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    )
    return done.stdout.strip()


@pytest.fixture
def dirty_repo(tmp_path: Path) -> Path:
    """A repo with one tagged commit, then a modified, a staged and an untracked file."""
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("print('train')\nLR = 3e-4\n")
    (repo / "model.py").write_text("WIDTH = 128\n")
    git(repo, "add", "train.py", "model.py")
    git(repo, "commit", "-q", "-m", "baseline model")
    git(repo, "tag", "v0.1")
    git(repo, "remote", "add", "origin",
        f"https://alice:{GITHUB_TOKEN}@github.com/lab/proj.git")
    git(repo, "remote", "add", "mirror", f"ssh://bob:{SSH_PASSWORD}@git.example.org/lab/proj.git")
    (repo / "train.py").write_text("print('train')\nLR = 1e-3  # tuned\n")
    (repo / "model.py").write_text("WIDTH = 256\n")
    git(repo, "add", "model.py")  # staged change: must be in the diff as well
    (repo / "notes_untracked.txt").write_text("scratch\n")
    return repo


def serialised(snapshot: Snapshot) -> str:
    """Everything a snapshot would put in the store, as one string."""
    parts = [json.dumps(snapshot.provenance)]
    parts += [a.name + a.kind + a.data.decode("utf-8", "replace") for a in snapshot.attachments]
    return "\n".join(parts)


def attachment(snapshot: Snapshot, kind: str):
    found = [a for a in snapshot.attachments if a.kind == kind]
    assert len(found) <= 1, f"more than one {kind} attachment"
    return found[0] if found else None


# -- git ---------------------------------------------------------------------------------------


def test_dirty_repo_records_sha_branch_tag_and_dirty_flag(dirty_repo: Path):
    snap = capture_snapshot(argv=["train.py"], cwd=str(dirty_repo), environ={})
    g = snap.provenance["git"]
    assert g["present"] is True
    assert g["root"] == str(dirty_repo.resolve())
    assert g["sha"] == git(dirty_repo, "rev-parse", "HEAD")
    assert g["branch"] == "main" and g["detached"] is False
    assert g["tags"] == ["v0.1"]
    assert g["describe"] == "v0.1-dirty"
    assert g["dirty"] is True
    assert sorted(g["changed_files"]) == ["M model.py", "M train.py"]
    assert g["untracked_files"] == ["notes_untracked.txt"]
    assert g["author"] == "Ada Lab" and g["subject"] == "baseline model"


def test_dirty_diff_holds_staged_unstaged_and_untracked_names(dirty_repo: Path):
    snap = capture_snapshot(argv=["train.py"], cwd=str(dirty_repo), environ={})
    diff = attachment(snap, "git_diff")
    assert diff is not None and diff.name == "git.diff"
    text = diff.data.decode()
    assert "+LR = 1e-3  # tuned" in text  # unstaged
    assert "+WIDTH = 256" in text  # staged
    assert "notes_untracked.txt" in text
    meta = snap.provenance["git"]["diff"]
    assert meta["sha256"] == hashlib.sha256(diff.data).hexdigest()
    assert meta["truncated"] is False


def test_dirty_diff_reapplies_onto_its_commit(dirty_repo: Path, tmp_path: Path):
    snap = capture_snapshot(argv=["train.py"], cwd=str(dirty_repo), environ={})
    patch = tmp_path / "captured.diff"
    patch.write_bytes(attachment(snap, "git_diff").data)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(dirty_repo), str(clone)], check=True)
    git(clone, "apply", str(patch))
    assert (clone / "train.py").read_text() == (dirty_repo / "train.py").read_text()
    assert (clone / "model.py").read_text() == "WIDTH = 256\n"


def test_remote_credentials_are_stripped(dirty_repo: Path):
    snap = capture_snapshot(argv=["train.py"], cwd=str(dirty_repo), environ={})
    g = snap.provenance["git"]
    assert g["remotes"] == {
        "origin": "https://github.com/lab/proj.git",
        "mirror": "ssh://bob@git.example.org/lab/proj.git",
    }
    assert g["remote_url"] == "https://github.com/lab/proj.git"
    text = serialised(snap)
    assert GITHUB_TOKEN not in text and SSH_PASSWORD not in text and "alice" not in text


def test_clean_repo_is_not_dirty_and_has_no_diff(dirty_repo: Path):
    git(dirty_repo, "add", "-A")
    git(dirty_repo, "commit", "-q", "-m", "tune")
    snap = capture_snapshot(argv=["train.py"], cwd=str(dirty_repo), environ={})
    g = snap.provenance["git"]
    assert g["dirty"] is False and g["untracked_count"] == 0
    assert g["tags"] == [] and g["describe"].startswith("v0.1-1-g")
    assert attachment(snap, "git_diff") is None and "diff" not in g


def test_oversized_diff_is_cut_and_marked(dirty_repo: Path, monkeypatch):
    (dirty_repo / "train.py").write_text("".join(f"line {i}\n" for i in range(2000)))
    monkeypatch.setattr(capture, "MAX_DIFF_BYTES", 1000)
    snap = capture_snapshot(argv=["train.py"], cwd=str(dirty_repo), environ={})
    diff = attachment(snap, "git_diff").data
    assert snap.provenance["git"]["diff"]["truncated"] is True
    assert b"diff cut at 1000 bytes" in diff
    assert len(diff) < 1000 + 600  # the header and the note, nothing more of the diff


def test_repo_without_commits_reports_staged_changes(tmp_path: Path):
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    snap = capture_snapshot(argv=[], cwd=str(tmp_path), environ={})
    g = snap.provenance["git"]
    assert g["present"] is True and g["sha"] is None and "no commits" in g["note"]
    assert g["branch"] == "main" and g["dirty"] is True
    assert b"+x = 1" in attachment(snap, "git_diff").data


def test_outside_a_repo_git_section_says_so_without_raising(tmp_path: Path):
    assert find_project_root(tmp_path) == tmp_path.resolve(), "tmp_path must not be in a repo"
    snap = capture_snapshot(argv=[], cwd=str(tmp_path), environ={})
    assert snap.provenance["git"] == {
        "present": False, "reason": "not a git repository", "cwd": str(tmp_path)
    }
    assert attachment(snap, "git_diff") is None


def test_missing_git_executable_is_recorded_not_raised(dirty_repo: Path, monkeypatch, tmp_path):
    empty_bin = tmp_path / "empty_bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    snap = capture_snapshot(argv=["train.py"], cwd=str(dirty_repo), environ={})
    assert snap.provenance["git"]["present"] is False
    assert "not installed" in snap.provenance["git"]["reason"]


def test_find_project_root_is_the_git_root_from_a_subfolder(dirty_repo: Path):
    sub = dirty_repo / "src" / "deep"
    sub.mkdir(parents=True)
    assert find_project_root(sub) == dirty_repo.resolve()
    assert find_project_root(str(dirty_repo)) == dirty_repo.resolve()


# -- secrets and env ---------------------------------------------------------------------------

SECRETS = {
    "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
    "HF_TOKEN": "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "GITHUB_TOKEN": GITHUB_TOKEN,
    "DATABASE_URL": "postgresql://labuser:s3cr3t-Passw0rd@db.internal:5432/runs",
    "TORCH_HUB_TOKEN": "plainvalue-but-secret-name",  # allowed prefix, secret-sounding name
}
# Allowed names whose values are credentials anyway: withheld, never stored.
SECRET_VALUES_UNDER_ALLOWED_NAMES = {
    "LABFOLIO_EXPERIMENT": "ghp_Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp9Oo8",
    "MASTER_ADDR": "https://trainer:MasterPw-77@10.0.0.1",
    "SLURM_JOB_NAME": "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c",
}


def test_secret_env_vars_never_reach_the_snapshot(dirty_repo: Path):
    environ = {**SECRETS, **SECRET_VALUES_UNDER_ALLOWED_NAMES, "OMP_NUM_THREADS": "4"}
    snap = capture_snapshot(argv=["train.py"], cwd=str(dirty_repo), environ=environ)
    text = serialised(snap)
    for name, value in SECRETS.items():
        assert name not in text, f"{name} leaked into the snapshot"
        assert value not in text, f"the value of {name} leaked into the snapshot"
    for name, value in SECRET_VALUES_UNDER_ALLOWED_NAMES.items():
        assert value not in text, f"a secret-looking {name} value leaked into the snapshot"
    env = snap.provenance["env"]
    assert env["vars"] == {"OMP_NUM_THREADS": "4"}
    assert env["withheld"] == sorted(SECRET_VALUES_UNDER_ALLOWED_NAMES)


def test_allow_listed_env_vars_are_stored(tmp_path: Path):
    allowed = {
        "CUDA_VISIBLE_DEVICES": "GPU-8a2b0c1d-3e4f-5a6b-7c8d-9e0f1a2b3c4d,1",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "OMP_NUM_THREADS": "8",
        "PYTHONHASHSEED": "0",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        "TORCH_CUDNN_V8_API_ENABLED": "1",
        "NCCL_P2P_DISABLE": "1",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train_mhc_cifar10_seed3_lr3e4_bs512_warmup",
        "SLURM_NODELIST": "gpu[001-004]",
        "WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "2",
        "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500",
        "LABFOLIO_MACHINE": "bigbox", "LABFOLIO_EXPERIMENT": "baseline_cifar10_004",
        "LABFOLIO_VARIANT": "mhc", "LABFOLIO_SEED": "3",
    }
    not_allowed = {"HOME": "/home/ada", "PATH": "/usr/bin", "EDITOR": "vim"}
    snap = capture_snapshot(argv=[], cwd=str(tmp_path), environ={**allowed, **not_allowed})
    assert snap.provenance["env"] == {"vars": allowed, "withheld": []}
    assert snap.provenance["invocation"]["distributed"] == {
        "rank": 2, "local_rank": 2, "world_size": 4, "rank_source": "RANK"
    }


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"https://alice:{GITHUB_TOKEN}@github.com/lab/proj.git",
         "https://github.com/lab/proj.git"),
        (f"https://{GITHUB_TOKEN}@github.com/lab/proj.git", "https://github.com/lab/proj.git"),
        ("https://gitlab.example/lab/p.git?private_token=abc", "https://gitlab.example/lab/p.git"),
        ("ssh://bob:pw@git.example.org:2222/lab/p.git", "ssh://bob@git.example.org:2222/lab/p.git"),
        ("ssh://git@github.com/lab/p.git", "ssh://git@github.com/lab/p.git"),
        ("git@github.com:lab/p.git", "git@github.com:lab/p.git"),
        ("postgresql+psycopg://lab:pw@db:5432/runs", "postgresql+psycopg://lab@db:5432/runs"),
        ("/srv/git/proj.git", "/srv/git/proj.git"),
    ],
)
def test_strip_url_credentials_keeps_the_address_and_drops_the_secret(url, expected):
    assert strip_url_credentials(url) == expected


def test_argv_values_of_secret_flags_are_redacted_and_other_values_kept():
    argv = ["train.py", "--api-key", "abc123", "--token=xyz", "--tokenizer", "gpt2",
            "--author", "Ada", "--store", "postgresql://lab:pw@db/runs",
            "--resume", "mlruns/0/3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d/ckpt.pt",
            f"--extra={GITHUB_TOKEN}", "--db_password", "pw2",
            "logger.wandb.api_key=k3y", "optimizer.lr=1e-3", "model.tokenizer=gpt2"]
    assert redact_argv(argv) == [
        "train.py", "--api-key", "<redacted>", "--token=<redacted>", "--tokenizer", "gpt2",
        "--author", "Ada", "--store", "postgresql://lab@db/runs",
        "--resume", "mlruns/0/3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d/ckpt.pt",
        "<redacted>", "--db_password", "<redacted>",
        "logger.wandb.api_key=<redacted>", "optimizer.lr=1e-3", "model.tokenizer=gpt2",
    ]


# -- invocation, python, machine ---------------------------------------------------------------


def test_entry_script_is_attached_and_its_sha256_matches(dirty_repo: Path):
    snap = capture_snapshot(argv=["train.py", "--lr", "1e-3"], cwd=str(dirty_repo), environ={})
    inv = snap.provenance["invocation"]
    source = (dirty_repo / "train.py").read_bytes()
    entry = inv["entry_script"]
    assert entry["path"] == str((dirty_repo / "train.py").resolve())
    assert entry["relpath"] == "train.py"
    assert entry["sha256"] == hashlib.sha256(source).hexdigest()
    script = attachment(snap, "source")
    assert script.name == "train.py" and script.data == source
    assert inv["argv"] == ["train.py", "--lr", "1e-3"]
    assert inv["cwd"] == str(dirty_repo)
    assert inv["pid"] == os.getpid()
    started = inv["started_at"]
    assert started.endswith("+00:00") and started[:4].isdigit()


def test_no_entry_script_for_python_dash_c(tmp_path: Path):
    snap = capture_snapshot(argv=["-c"], cwd=str(tmp_path), environ={})
    assert snap.provenance["invocation"]["entry_script"] is None
    assert attachment(snap, "source") is None


def test_package_list_contains_numpy_at_its_installed_version(tmp_path: Path):
    snap = capture_snapshot(argv=[], cwd=str(tmp_path), environ={})
    numpy_version = importlib.metadata.version("numpy")
    listing = attachment(snap, "packages").data.decode().splitlines()
    assert f"numpy=={numpy_version}" in listing
    assert listing == sorted(listing, key=lambda line: line.split("==")[0].lower()
                             .replace("_", "-").replace(".", "-"))
    python = snap.provenance["python"]
    assert python["packages"]["numpy"] == numpy_version
    assert python["version"] == ".".join(map(str, sys.version_info[:3]))
    assert python["package_count"] == len(listing)


def test_capture_imports_none_of_the_packages_it_reports_on(tmp_path: Path):
    # Versions come from metadata: importing torch just to read its version would cost seconds
    # and initialise CUDA in a process that may be about to fork.
    code = ("import sys; import labfolio.capture as c; before = set(sys.modules); "
            "c.capture_snapshot(argv=[]); "
            "new = {'torch', 'numpy', 'sklearn', 'transformers'} - before; "
            "bad = sorted(new & set(sys.modules)); assert not bad, bad; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=60)


def test_machine_name_comes_from_argument_then_env(tmp_path: Path):
    env = {"LABFOLIO_MACHINE": "bigbox"}
    named = capture_snapshot(argv=[], cwd=str(tmp_path), environ=env, machine_name="gpu-a")
    from_env = capture_snapshot(argv=[], cwd=str(tmp_path), environ=env)
    machine = from_env.provenance["machine"]
    assert named.provenance["machine"]["name"] == "gpu-a"
    assert machine["name"] == "bigbox"
    assert machine["hostname"] and machine["cpu_count"] >= 1
    assert machine["ram_total_gb"] > 0
    assert machine["gpu_count"] == len(machine["gpus"])


# -- robustness --------------------------------------------------------------------------------


def test_failing_section_is_recorded_as_error_and_others_survive(dirty_repo: Path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("metadata folder unreadable")

    monkeypatch.setattr(capture, "_capture_python", broken)
    monkeypatch.setattr(capture, "describe_gpus", broken)
    snap = capture_snapshot(argv=["train.py"], cwd=str(dirty_repo), environ={})
    assert snap.provenance["python"] == {"error": "OSError: metadata folder unreadable"}
    assert snap.provenance["machine"]["errors"]["gpus"] == "OSError: metadata folder unreadable"
    assert snap.provenance["machine"]["gpus"] == []
    assert snap.provenance["git"]["dirty"] is True


def test_snapshot_is_json_serialisable_and_quick(dirty_repo: Path):
    capture_snapshot(argv=["train.py"], cwd=str(dirty_repo), environ={})  # warm imports
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        snap = capture_snapshot(argv=["train.py"], cwd=str(dirty_repo), environ=dict(os.environ))
        timings.append(time.perf_counter() - start)
    assert json.loads(json.dumps(snap.provenance)) == snap.provenance
    assert set(snap.provenance) == {"git", "machine", "python", "invocation", "env"}
    # The design target is < 150 ms; the bound is loose because CI machines are shared.
    assert sorted(timings)[1] < 1.0, f"capture took {timings}"
