"""Security of the dashboard: sanitised Markdown, contained artifact paths, tokens, hidden secrets."""

from __future__ import annotations

import hashlib
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from labfolio.store import schema as t
from labfolio.store.batch import Batch
from labfolio.store.tokens import create_token, list_tokens, revoke_token
from labfolio.web.app import WebSettings, create_app
from labfolio.web.safety import redact_secrets, render_markdown
from seed import start_run

INJECTIONS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<a href=\"javascript:alert(1)\">click</a>",
    "[click](javascript:alert(1))",
    "<svg onload=alert(1)></svg>",
    "<iframe src=\"https://evil.example\"></iframe>",
    "<div onmouseover=\"alert(1)\">hover</div>",
    "<p style=\"background:url(javascript:alert(1))\">x</p>",
    "<<script>script>alert(1)<</script>/script>",
    "[[experiments/x/experiment|<img src=x onerror=alert(1)>]]",
]


class _Elements(HTMLParser):
    """Every element and attribute the browser would build from some HTML."""

    def __init__(self):
        super().__init__()
        self.tags, self.attributes = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, name.lower(), (value or "").strip().lower()) for name, value in attrs]


def _dangerous(html: str) -> list:
    parsed = _Elements()
    parsed.feed(html)
    found = [tag for tag in parsed.tags if tag in ("script", "iframe", "object", "embed", "svg", "style", "form")]
    for tag, name, value in parsed.attributes:
        if name.startswith("on") or name == "style":
            found.append(f"{tag}[{name}]")
        if name in ("href", "src") and value.replace(" ", "").startswith(("javascript:", "data:", "vbscript:")):
            found.append(f"{tag}[{name}={value}]")
    return found


@pytest.mark.parametrize("payload", INJECTIONS)
def test_user_markdown_never_renders_script_or_event_handlers(payload):
    html = render_markdown(f"Hypothesis\n\n{payload}\n\n| a | b |\n|---|---|\n| {payload} | 1 |\n\n- {payload}")
    assert _dangerous(html) == []


def test_the_injection_check_itself_catches_raw_payloads():
    # Guards the test above: unsanitised, each payload is caught (bar the Markdown-only ones).
    assert all(_dangerous(p) for p in INJECTIONS if p.startswith("<") and "<<" not in p)


def test_markdown_injection_in_an_edited_field_is_inert_on_the_page(seeded_store):
    client = TestClient(create_app(seeded_store))
    payload = "<img src=x onerror=alert(1)> <script>alert(2)</script> **bold**"
    assert client.post("/experiments/exp_a/fields", json={"field": "hypothesis", "value": payload}).status_code == 200
    page = client.get("/experiments/exp_a", headers={"accept": "text/html"}).text
    start = page.index('id="rendered-hypothesis"')
    rendered = page[start:page.index('<form class="edit"', start)]
    assert _dangerous(rendered) == [] and "<script>alert(2)" not in page
    assert "<strong>bold</strong>" in page  # Markdown itself still renders
    # the raw value stays as typed in the textarea, escaped
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page


def _artifact_event(path, name="evil.png", kind="image", is_reference=False):
    return {"type": "artifact", "name": name, "kind": kind, "sha256": "0" * 64, "size": 10, "path": path,
            "is_reference": is_reference}


@pytest.mark.parametrize("path", ["../../../../etc/passwd", "/etc/passwd", "ab/../../../etc/hostname",
                                  "..%2f..%2fetc%2fpasswd", "ab/../../labfolio.db"])
def test_artifact_paths_cannot_escape_the_artifact_folder(seeded_store, path):
    seeded_store.write_batch(Batch(run_id="exp_a_mhc_s0", events=[_artifact_event(path)]))
    client = TestClient(create_app(seeded_store))
    index = len(seeded_store.artifacts("exp_a_mhc_s0")) - 1
    response = client.get(f"/runs/exp_a_mhc_s0/artifacts/{index}")
    assert response.status_code == 404
    assert "root:" not in response.text
    page = client.get("/runs/exp_a_mhc_s0.json").json()
    assert page["artifacts"][index]["url"] is None


def test_traversal_in_the_url_itself_is_refused(seeded_store):
    client = TestClient(create_app(seeded_store))
    for url in ["/runs/exp_a_mhc_s0/artifacts/-1", "/runs/exp_a_mhc_s0/artifacts/999",
                "/runs/..%2F..%2Fetc/artifacts/0", "/static/..%2F..%2Fstore%2Fsql.py"]:
        assert client.get(url).status_code in (404, 422)


def test_a_real_artifact_inside_the_folder_is_served_as_an_image(seeded_store):
    from labfolio.artifacts import store_bytes

    stored = store_bytes(seeded_store.location.artifact_dir, b"\x89PNG\r\n\x1a\nfake", name="curve.png", kind="image")
    seeded_store.write_batch(Batch(run_id="exp_a_mhc_s0", events=[stored.as_event(5, 0.0)]))
    client = TestClient(create_app(seeded_store))
    page = client.get("/runs/exp_a_mhc_s0.json").json()
    url = page["artifacts"][-1]["url"]
    response = client.get(url)
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert f'src="{url}"' in client.get("/runs/exp_a_mhc_s0", headers={"accept": "text/html"}).text


def test_reference_artifacts_are_listed_but_never_served(seeded_store, tmp_path):
    secret = tmp_path / "ckpt.pt"
    secret.write_bytes(b"weights")
    seeded_store.write_batch(Batch(run_id="exp_a_mhc_s0", events=[
        _artifact_event(str(secret), "ckpt.pt", "checkpoint", is_reference=True)]))
    client = TestClient(create_app(seeded_store))
    index = len(seeded_store.artifacts("exp_a_mhc_s0")) - 1
    assert client.get(f"/runs/exp_a_mhc_s0/artifacts/{index}").status_code == 404


@pytest.fixture
def auth_client(seeded_store):
    token, _ = create_token(seeded_store, "alice")
    return TestClient(create_app(seeded_store, WebSettings(auth=True))), token


def test_edits_need_the_token_header_when_auth_is_on(auth_client, seeded_store):
    client, token = auth_client
    edit = {"field": "hypothesis", "value": "changed"}
    assert client.post("/experiments/exp_a/fields", json=edit).status_code == 401
    assert client.post("/experiments/exp_a/fields", json=edit, headers={"Authorization": "Bearer lf_wrong"}).status_code == 403
    assert client.post("/runs/exp_a_mhc_s0/status", json={"status": "invalid"}).status_code == 401
    assert seeded_store.note_fields("experiment", "exp_a")["hypothesis"] == "mHC lowers the loss"
    ok = client.post("/experiments/exp_a/fields", json=edit, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and seeded_store.note_fields("experiment", "exp_a")["hypothesis"] == "changed"


def test_a_signed_in_cookie_reads_but_cannot_write(auth_client):
    client, token = auth_client
    assert client.get("/runs.json").status_code == 401
    login = client.post("/login", content=f"token={token}&next=/runs",
                        headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()
    assert client.get("/runs.json").status_code == 200  # the cookie now carries reads
    # ...but a write with only the cookie (what a cross-site form would send) is refused
    assert client.post("/experiments/exp_a/fields", json={"field": "hypothesis", "value": "x"}).status_code == 401


def test_pages_redirect_a_browser_to_sign_in_and_public_read_opens_reads_only(seeded_store):
    create_token(seeded_store, "bob")
    closed = TestClient(create_app(seeded_store, WebSettings(auth=True)))
    response = closed.get("/runs", headers={"accept": "text/html"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    public = TestClient(create_app(seeded_store, WebSettings(auth=True, public_read=True)))
    assert public.get("/runs.json").status_code == 200
    assert public.post("/runs/exp_a_mhc_s0/status", json={"status": "invalid"}).status_code == 401


def test_tokens_are_stored_hashed_and_revocation_takes_effect(seeded_store):
    token, info = create_token(seeded_store, "ci")
    with seeded_store.engine.connect() as conn:
        rows = conn.execute(select(t.api_tokens)).all()
    assert all(token not in str(tuple(r)) for r in rows)
    assert hashlib.sha256(token.encode()).hexdigest() in {r.token_hash for r in rows}
    app = create_app(seeded_store, WebSettings(auth=True))
    app.state.access.checker.refresh_s = 0  # see revocations at once
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/runs.json", headers=headers).status_code == 200
    revoke_token(seeded_store, "ci")
    assert client.get("/runs.json", headers=headers).status_code == 403
    assert [i.name for i in list_tokens(seeded_store)] == []
    assert [i.name for i in list_tokens(seeded_store, include_revoked=True)] == ["ci"]


def test_token_comparison_is_constant_time(monkeypatch, seeded_store):
    import hmac

    from labfolio.store import tokens

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(tokens.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    create_token(seeded_store, "one")
    create_token(seeded_store, "two")
    checker = tokens.TokenChecker(seeded_store)
    assert checker.check("lf_guess") is None
    assert len(calls) == 2  # every live token compared, digests only, no early exit


SECRET_ENV = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "WANDB_API_KEY": "0123456789abcdef",
              "HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz", "DB_PASSWORD": "hunter2", "CUDA_VISIBLE_DEVICES": "0,1",
              "GITHUB_PAT_LOOKALIKE": "ghp_0123456789abcdefghijklmnopqrstuvwxyz"}


def test_provenance_pages_never_show_secret_looking_env_vars(seeded_store):
    start_run(seeded_store, "leaky_run", experiment="exp_leak", provenance={
        "env": SECRET_ENV, "invocation": {"argv": ["train.py", "--api-key=sk-abcdefghijklmnopqrstuv",
                                                   "WANDB_API_KEY=abc123"]}})
    client = TestClient(create_app(seeded_store))
    html = client.get("/runs/leaky_run", headers={"accept": "text/html"}).text
    twin = client.get("/runs/leaky_run.json").text
    for secret in ("wJalrXUtnFEMI", "0123456789abcdef", "hf_abcdefghij", "hunter2", "ghp_0123456789", "sk-abcdefghij",
                   "abc123"):
        assert secret not in html and secret not in twin
    assert "CUDA_VISIBLE_DEVICES" in html and "0,1" in html  # harmless settings stay visible
    api = TestClient(create_app(seeded_store, WebSettings(ingest=True)))
    assert "hunter2" not in api.get("/runs/leaky_run.json").text


def test_redaction_keeps_structure():
    out = redact_secrets({"env": {"MY_TOKEN": "x", "PATH": "/bin"}, "list": ["PASSWORD=1", "ok"]})
    assert out == {"env": {"MY_TOKEN": "[hidden]", "PATH": "/bin"}, "list": ["PASSWORD=[hidden]", "ok"]}
