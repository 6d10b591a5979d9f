"""test_http.py - the coordinator's OpenAI-compatible HTTP front door, driven by real
clients: the official `openai` package, curl, schemathesis and raw sockets.

openai_compat (synthetic workers): completions and chat, streamed and not, with
stream_options.include_usage; usage counts; a seeded request gives the same text twice and
streamed == not streamed; `stop`; a prompt given as token ids; models.list / retrieve;
NotFoundError for an unknown model; BadRequestError for n=2, temperature=3, wrong types,
unknown arguments; a streamed chat through `curl -N`: text/event-stream, `id: N` equal to
the index of the event's first token, JSON data, `data: [DONE]` at the end.
auth: /health without a key; 401 (OpenAI's error shape) without or with a wrong key, and
openai.AuthenticationError; 403 for a user key on /admin, 200 for the admin key; rps and
tpm limits give 429 (Retry-After); max_tier refuses more urgent priorities (403), a bad
priority name is 400; the coordinator will not start with auth on and no keys (exit 2).
admission: a full normal queue answers 429 queue_full at once (the rest 200), a deadline
shorter than the worker's TTFT 429 deadline_unmeetable, a bad X-Deadline-Ms 400; queue
slots are given back; the refusals are in /metrics.
tracing: a traceparent keeps its trace id (new parent id) in the reply and on the log lines
of coordinator (http_generate, request_done) and worker (request_accepted, request_done);
an invalid one is replaced by a new valid trace.
abuse: malformed JSON, wrong types, a JSON array, bad UTF-8, NUL, deep nesting, an empty
body (400); bodies over http_max_body_bytes with Content-Length (413) and chunked (413 or
closed); unknown path (404); wrong method (405 + Allow); oversized headers; slowloris
sockets closed after http_timeout_s while a normal request still goes through; 1,000
concurrent connections all answered; a client that hangs up mid-stream cancels its request
on the worker (finish=canceled, llm_http_client_gone_total). The coordinator serves and
lives on afterwards.
schemathesis: docs/openapi.yaml against a coordinator with auth on (every check, bounded
examples, fixed seed), once as written and once with `model` pinned to the served model so
that generated requests reach a worker.
cluster_sh: scripts/cluster.sh up with synthetic workers, a streamed chat through curl on
its HTTP port, down.
model (default model; skipped without it): a greedy chat through the openai package equals
`llmctl chat` through RPC.
Every section stops its coordinator with SIGTERM and checks its exit code and stderr for
sanitizer reports. Until the coordinator binary exists the whole test is skipped (77).
"""
import hashlib
import http.client
import json
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import itest  # noqa: E402
from test_coordinator import ROOT, run_sections  # noqa: E402

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
ERROR_KEYS = {"message", "type", "param", "code"}


# ---- helpers ---------------------------------------------------------------------------------
def start_coord(ctx, name, models, *extra, keys=None):
    """A coordinator with its HTTP front door on a free port (s.http); auth off unless keys
    (api_keys specs) are given."""
    port = ctx.port()
    flags = ["--http-port", str(port)]
    if keys is None:
        flags.append("--auth=false")
    for k in keys or ():
        flags += ["--api-keys", k]
    s, rpc, reg = ctx.coordinator(name, models, *flags, *extra)
    s.http = port
    return s, rpc, reg


def key_spec(name, secret, rest):
    return f"{name} sha256={hashlib.sha256(secret.encode()).hexdigest()} {rest}"


def req(port, method, path, body=None, headers=None, key=None, timeout=60):
    """One HTTP request on a fresh connection: (status, headers lowercased, body bytes)."""
    h = dict(headers or {})
    if key:
        h["Authorization"] = f"Bearer {key}"
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def err_of(data):
    """The error object of an OpenAI-shaped error body, or None when the shape is wrong."""
    try:
        e = json.loads(data)
    except ValueError:
        return None
    if not isinstance(e, dict) or set(e) != {"error"} or not isinstance(e["error"], dict) or \
            set(e["error"]) != ERROR_KEYS or not isinstance(e["error"]["message"], str):
        return None
    return e["error"]


def code_of(data):
    e = err_of(data)
    return e["code"] if e else f"<not an OpenAI error: {data[:200]!r}>"


def client(port, key="none"):
    import openai
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0,
                         timeout=60)


def wait_health(port, n, timeout_s=30):
    def ok():
        try:
            st, _, data = req(port, "GET", "/health", timeout=5)
            return st == 200 and json.loads(data)["workers_ready"] >= n
        except (OSError, ValueError, http.client.HTTPException):
            return False
    return itest.wait_until(ok, timeout_s, 0.1)


def metrics(port, key=None):
    st, _, data = req(port, "GET", "/metrics", key=key)
    return data.decode() if st == 200 else ""


def metric_sum(text, name, **labels):
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})?\s+(\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def parse_sse(text):
    """Events of an SSE body: dicts with id (int or None), data (str or None), comment."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        ev = {"id": None, "data": None, "comment": False}
        for line in block.split("\n"):
            if line.startswith(":"):
                ev["comment"] = True
            elif line.startswith("id: "):
                ev["id"] = int(line[4:])
            elif line.startswith("data: "):
                ev["data"] = line[6:]
        events.append(ev)
    return events


def status_of(raw):
    m = re.match(rb"^HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else None


def raw_exchange(port, data, timeout=10, chunks=None):
    """Sends data (then each of chunks) on a raw socket and reads until the server closes
    or timeout. Returns the bytes read (b"" when closed without a reply)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got = b""
    try:
        try:
            s.sendall(data)
            for c in chunks or ():
                s.sendall(c)
        except OSError:
            pass  # the server may answer and close before it has read everything
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not b:
                break
            got += b
    finally:
        s.close()
    return got


def stop_all(ctx, res, section, coord, workers=()):
    """SIGTERM the workers, then the coordinator: exit 0, no sanitizer reports."""
    codes = {w.wid: w.stop() for w in workers if w.alive()}
    res.check(f"{section}: workers exit 0 without sanitizer reports",
              all(c == 0 for c in codes.values()) and not any(w.sanitizer() for w in workers),
              json.dumps(codes))
    rc = coord.stop()
    res.check(f"{section}: coordinator exits 0 on SIGTERM without sanitizer reports",
              rc == 0 and not coord.sanitizer(), f"rc={rc} {coord.stderr()[-2000:]}")


# ---- 1. the OpenAI API through the openai package and curl ----------------------------------
def openai_compat(ctx, res):
    import openai
    M = "syn-a"
    coord, rpc, reg = start_coord(ctx, "coord-oai", [f"{M} tokenizer=synthetic policy=least_loaded"])
    W = [ctx.worker(f"oa-{i}", reg, M, step_us=1000) for i in (1, 2)]
    if not res.check("openai_compat: 2 workers ready (/health)", wait_health(coord.http, 2)):
        return
    c = client(coord.http)

    # Completions, not streamed and streamed, with the same seed.
    kw = dict(model=M, prompt="hello world", max_tokens=8, temperature=0.9, seed=7)
    r = c.completions.create(**kw)
    u, ch0 = r.usage, r.choices[0]
    res.check("completions: 8 tokens of text, finish length, usage prompt>0 / 8 / sum",
              r.object == "text_completion" and len(ch0.text) == 8 and
              ch0.finish_reason == "length" and u.prompt_tokens > 0 and
              u.completion_tokens == 8 and u.total_tokens == u.prompt_tokens + 8,
              r.model_dump_json())
    again = c.completions.create(**kw)
    res.check("completions: same seed and temperature, same text",
              again.choices[0].text == ch0.text, f"{again.choices[0].text!r} vs {ch0.text!r}")
    chunks = list(c.completions.create(**kw, stream=True,
                                       stream_options={"include_usage": True}))
    text = "".join(x.choices[0].text for x in chunks if x.choices)
    fins = [x.choices[0].finish_reason for x in chunks if x.choices and x.choices[0].finish_reason]
    last = chunks[-1] if chunks else None
    res.check("completions streamed: joined text == the not-streamed text, finish length",
              text == ch0.text and fins == ["length"], f"{text!r} vs {ch0.text!r} fins={fins}")
    res.check("completions streamed: include_usage: usage only on the last chunk (choices [])",
              last is not None and not last.choices and last.usage is not None and
              last.usage.completion_tokens == 8 and last.usage.prompt_tokens == u.prompt_tokens
              and last.usage.total_tokens == u.total_tokens and
              all(x.usage is None for x in chunks[:-1]),
              last.model_dump_json() if last else "no chunks")

    # Chat, not streamed and streamed.
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    ckw = dict(model=M, messages=msgs, max_tokens=10, temperature=1.0, seed=99)
    r = c.chat.completions.create(**ckw)
    u, m0 = r.usage, r.choices[0]
    res.check("chat: an assistant message of 10 tokens, finish length, usage",
              r.object == "chat.completion" and m0.message.role == "assistant" and
              len(m0.message.content) == 10 and m0.finish_reason == "length" and
              u.prompt_tokens > 0 and u.completion_tokens == 10 and
              u.total_tokens == u.prompt_tokens + 10, r.model_dump_json())
    again = c.chat.completions.create(**ckw)
    res.check("chat: same seed and temperature, same text",
              again.choices[0].message.content == m0.message.content)
    chunks = list(c.chat.completions.create(**ckw, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(x.choices[0].delta.content or "" for x in chunks if x.choices)
    last = chunks[-1] if chunks else None
    res.check("chat streamed: a role chunk first, joined text == not streamed",
              chunks and chunks[0].choices[0].delta.role == "assistant" and
              text == m0.message.content, f"{text!r} vs {m0.message.content!r}")
    res.check("chat streamed: finish length, then the usage chunk",
              [x.choices[0].finish_reason for x in chunks if x.choices and
               x.choices[0].finish_reason] == ["length"] and last and not last.choices and
              last.usage and last.usage.completion_tokens == 10 and
              last.usage.prompt_tokens == u.prompt_tokens,
              last.model_dump_json() if last else "no chunks")
    plain = list(c.chat.completions.create(**ckw, stream=True))
    res.check("chat streamed without include_usage: no usage field set",
              all(x.usage is None for x in plain) and
              "".join(x.choices[0].delta.content or "" for x in plain if x.choices) ==
              m0.message.content)

    # stop: cut a greedy text at a 2-byte sequence found in it.
    base = c.completions.create(model=M, prompt="stop here", max_tokens=16, temperature=0)
    t = base.choices[0].text
    k = next((i for i in range(3, 14) if t.find(t[i:i + 2]) == i), None)
    if res.check("stop: a greedy text with a usable stop sequence", k is not None, repr(t)):
        s = c.completions.create(model=M, prompt="stop here", max_tokens=16, temperature=0,
                                 stop=[t[k:k + 2], "@@@"])
        res.check("stop (list): text cut before the sequence, finish stop",
                  s.choices[0].text == t[:k] and s.choices[0].finish_reason == "stop",
                  f"{s.choices[0].text!r} want {t[:k]!r} ({s.choices[0].finish_reason})")
        s = list(c.completions.create(model=M, prompt="stop here", max_tokens=16,
                                      temperature=0, stop=t[k:k + 2], stream=True))
        res.check("stop (string, streamed): the same cut",
                  "".join(x.choices[0].text for x in s if x.choices) == t[:k] and
                  s[-1].choices[0].finish_reason == "stop")

    # The prompt as token ids (synthetic tokens are bytes).
    ids = list(b"stop here")
    r = c.completions.create(model=M, prompt=ids, max_tokens=16, temperature=0)
    res.check("prompt as token ids: the same text and prompt_tokens as the text prompt",
              r.choices[0].text == t and r.usage.prompt_tokens == base.usage.prompt_tokens,
              f"{r.choices[0].text!r} vs {t!r}, {r.usage} vs {base.usage}")
    r = c.completions.create(model=M, prompt=[ids], max_tokens=16, temperature=0)
    res.check("prompt as a one-element list of token ids", r.choices[0].text == t)

    # Models.
    ml = c.models.list()
    res.check("models.list: the served model", [m.id for m in ml.data] == [M] and
              ml.data[0].owned_by == "llmcluster", ml.model_dump_json())
    mr = c.models.retrieve(M)
    res.check("models.retrieve", mr.id == M and mr.object == "model", mr.model_dump_json())

    def raises(name, exc, fn, check=None):
        try:
            got = fn()
            res.check(name, False, f"no exception: {str(got)[:300]}")
        except exc as e:
            res.check(name, check(e) if check else True, f"{e!r}"[:400])
        except Exception as e:  # noqa: BLE001 - any other exception is the failure
            res.check(name, False, f"{e!r}"[:400])
    raises("unknown model (retrieve): openai.NotFoundError", openai.NotFoundError,
           lambda: c.models.retrieve("no-such-model"))
    raises("unknown model (completions): openai.NotFoundError, code model_not_found",
           openai.NotFoundError,
           lambda: c.completions.create(model="no-such-model", prompt="x", max_tokens=2),
           lambda e: e.code == "model_not_found")
    raises("unknown model (chat): openai.NotFoundError", openai.NotFoundError,
           lambda: c.chat.completions.create(model="no-such-model", messages=msgs, max_tokens=2))
    bad = [("n=2", dict(n=2), "n"),
           ("temperature=3", dict(temperature=3), "temperature"),
           ("max_tokens a string", dict(max_tokens="ten"), "max_tokens"),
           ("max_tokens 0", dict(max_tokens=0), "max_tokens"),
           ("top_p 1.5", dict(top_p=1.5), "top_p"),
           ("stop of 5 sequences", dict(stop=["a", "b", "c", "d", "e"]), "stop"),
           ("an unknown argument", dict(extra_body={"bogus_arg": 1}), "bogus_arg"),
           ("logprobs", dict(logprobs=True), "logprobs"),
           ("a role that does not exist", dict(messages=[{"role": "robot", "content": "x"}]),
            None),
           ("messages empty", dict(messages=[]), "messages"),
           ("stream_options without stream", dict(stream_options={"include_usage": True}),
            None)]
    for name, over, param in bad:
        a = dict(model=M, messages=msgs, max_tokens=2)
        a.update(over)
        raises(f"chat with {name}: openai.BadRequestError" + (f" (param {param})" if param else ""),
               openai.BadRequestError, lambda a=a: c.chat.completions.create(**a),
               lambda e, p=param: e.status_code == 400 and (p is None or e.param == p))
    raises("completions with a prompt of 2 strings (batch): openai.BadRequestError",
           openai.BadRequestError,
           lambda: c.completions.create(model=M, prompt=["a", "b"], max_tokens=2))
    raises("completions with echo: openai.BadRequestError", openai.BadRequestError,
           lambda: c.completions.create(model=M, prompt="a", max_tokens=2, echo=True))

    # curl -N: the SSE framing.
    hdr = os.path.join(ctx.tmp, "curl-headers.txt")
    n_tok = 12
    body = json.dumps({"model": M, "stream": True, "max_tokens": n_tok, "temperature": 0,
                       "stream_options": {"include_usage": True}, "messages": msgs})
    p = subprocess.run(["curl", "-sN", "-D", hdr, "-H", "Content-Type: application/json",
                        "-d", body, f"http://127.0.0.1:{coord.http}/v1/chat/completions"],
                       capture_output=True, timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    with open(hdr) as f:
        heads = f.read()
    res.check("curl -N streamed chat: 200, Content-Type text/event-stream",
              p.returncode == 0 and heads.startswith("HTTP/1.1 200") and
              re.search(r"(?im)^content-type: text/event-stream", heads) is not None,
              f"rc={p.returncode} {heads!r}")
    ev = [e for e in parse_sse(out) if not e["comment"]]
    res.check("curl: the stream ends with data: [DONE] (without an id)",
              bool(ev) and ev[-1]["data"] == "[DONE]" and ev[-1]["id"] is None, out[-300:])
    problems, ids_seen, pos = [], [], 0
    for e in ev[:-1]:
        try:
            d = json.loads(e["data"])
        except (TypeError, ValueError):
            problems.append(f"data not JSON: {e['data']!r}")
            continue
        if e["id"] is None:
            problems.append(f"no id: {e}")
            continue
        ids_seen.append(e["id"])
        if d.get("object") != "chat.completion.chunk":
            problems.append(f"object {d.get('object')}")
        if d["choices"]:
            delta = d["choices"][0]["delta"]
            if delta.get("role") and e["id"] != 0:
                problems.append(f"role chunk id {e['id']}")
            if delta.get("content"):
                if e["id"] != pos:  # synthetic tokens are one byte each
                    problems.append(f"content chunk id {e['id']} != token index {pos}")
                pos += len(delta["content"].encode())
            if d["choices"][0]["finish_reason"] and e["id"] != pos:
                problems.append(f"finish chunk id {e['id']} != {pos}")
        elif e["id"] != pos:
            problems.append(f"usage chunk id {e['id']} != {pos}")
    res.check("curl: every event has id: N (nondecreasing, the index of its first token) "
              "and JSON data", not problems and ids_seen == sorted(ids_seen) and
              ids_seen[:1] == [0] and pos == n_tok, "; ".join(problems[:5]) + f" ids={ids_seen}")
    stop_all(ctx, res, "openai_compat", coord, W)


# ---- 2. API keys, roles, limits, tiers ------------------------------------------------------
def auth(ctx, res):
    import openai
    M = "syn-k"
    secrets = {n: f"sk-test-{n}-{os.urandom(6).hex()}" for n in
               ("ops", "plain", "burst", "small", "lowly")}
    keys = [key_spec("ops", secrets["ops"], "role=admin"),
            key_spec("plain", secrets["plain"], "role=user"),
            key_spec("burst", secrets["burst"], "role=user rps=1"),
            key_spec("small", secrets["small"], "role=user tpm=50"),
            key_spec("lowly", secrets["lowly"], "role=user max_tier=low")]
    coord, rpc, reg = start_coord(ctx, "coord-auth", [f"{M} tokenizer=synthetic policy=round_robin"],
                                  keys=keys)
    P = coord.http
    st, _, data = req(P, "GET", "/health")
    res.check("auth: /health without a key and without workers: 503 unavailable",
              st == 503 and json.loads(data) == {"status": "unavailable", "workers_ready": 0},
              f"{st} {data[:200]!r}")
    W = [ctx.worker(f"ak-{i}", reg, M, step_us=1000) for i in (1, 2)]
    if not res.check("auth: /health needs no key: 200 once 2 workers are ready",
                     wait_health(P, 2)):
        return
    gen = {"model": M, "prompt": "hi", "max_tokens": 2}
    st, h, data = req(P, "POST", "/v1/completions", gen)
    e = err_of(data)
    res.check("auth: no key: 401, OpenAI's error shape, code invalid_api_key",
              st == 401 and e is not None and e["code"] == "invalid_api_key" and
              e["type"] == "invalid_request_error", f"{st} {data[:300]!r}")
    for path in ("/v1/models", "/metrics", "/admin/workers"):
        st, _, data = req(P, "GET", path)
        res.check(f"auth: no key on {path}: 401", st == 401 and err_of(data) is not None,
                  f"{st} {data[:200]!r}")
    st, _, data = req(P, "POST", "/v1/completions", gen, key="sk-wrong")
    res.check("auth: a wrong key: 401 invalid_api_key",
              st == 401 and code_of(data) == "invalid_api_key", f"{st} {data[:300]!r}")
    st, _, data = req(P, "GET", "/v1/models", headers={"Authorization": "Basic abc"})
    res.check("auth: another scheme than Bearer: 401", st == 401, f"{st} {data[:200]!r}")
    try:
        client(P, "sk-wrong").models.list()
        res.check("auth: openai.AuthenticationError with a wrong key", False, "no exception")
    except openai.AuthenticationError as ex:
        res.check("auth: openai.AuthenticationError with a wrong key", ex.status_code == 401)
    ml = client(P, secrets["plain"]).models.list()
    res.check("auth: a user key lists the models", [m.id for m in ml.data] == [M])
    st, _, data = req(P, "GET", "/admin/workers", key=secrets["plain"])
    res.check("auth: a user key on /admin/workers: 403 admin_only",
              st == 403 and code_of(data) == "admin_only", f"{st} {data[:300]!r}")
    st, _, data = req(P, "POST", "/admin/drain", {"worker": "ak-1"}, key=secrets["plain"])
    res.check("auth: a user key on /admin/drain: 403", st == 403, f"{st} {data[:300]!r}")
    st, _, data = req(P, "GET", "/admin/workers", key=secrets["ops"])
    try:
        j = json.loads(data)
        ids = sorted(w["id"] for w in j["data"])
        ready = all(w["state"] == "ready" for w in j["data"])
    except (ValueError, KeyError, TypeError):
        j, ids, ready = None, None, False
    res.check("auth: the admin key on /admin/workers: 200, JSON with both workers",
              st == 200 and ids == ["ak-1", "ak-2"] and ready and
              j["models"][0]["id"] == M, f"{st} {data[:400]!r}")
    st, _, data = req(P, "POST", "/admin/drain", {"worker": "no-such-worker"}, key=secrets["ops"])
    res.check("auth: admin drain of an unknown worker: 404 worker_not_found",
              st == 404 and code_of(data) == "worker_not_found", f"{st} {data[:300]!r}")
    st, _, data = req(P, "GET", "/metrics", key=secrets["plain"])
    res.check("auth: a user key reads /metrics", st == 200 and b"llm_http_requests_total" in data,
              f"{st}")

    # rps=1 (burst 1): the second request at once is refused.
    st1, _, d1 = req(P, "POST", "/v1/completions", gen, key=secrets["burst"])
    st2, h2, d2 = req(P, "POST", "/v1/completions", gen, key=secrets["burst"])
    ra = h2.get("retry-after", "")
    res.check("auth: rps=1: the first request 200, the second at once 429 rate_limit_exceeded "
              "with Retry-After >= 1",
              st1 == 200 and st2 == 429 and code_of(d2) == "rate_limit_exceeded" and
              ra.isdigit() and int(ra) >= 1, f"{st1} {st2} retry-after={ra!r} {d2[:300]!r}")
    time.sleep(1.1)
    st3, _, d3 = req(P, "POST", "/v1/completions", gen, key=secrets["burst"])
    res.check("auth: rps=1: after a second the key may ask again", st3 == 200, f"{st3} {d3[:200]!r}")

    # tpm=50: 100 tokens can never fit; 4 do.
    st, h, data = req(P, "POST", "/v1/completions", dict(gen, max_tokens=100), key=secrets["small"])
    res.check("auth: tpm=50 and max_tokens 100: 429 rate_limit_exceeded",
              st == 429 and code_of(data) == "rate_limit_exceeded", f"{st} {data[:300]!r}")
    st, h, data = req(P, "POST", "/v1/completions", dict(gen, max_tokens=4), key=secrets["small"])
    res.check("auth: tpm=50 and max_tokens 4: 200", st == 200, f"{st} {data[:300]!r}")

    # max_tier=low.
    L = secrets["lowly"]
    st, _, data = req(P, "POST", "/v1/completions", gen, key=L, headers={"X-Priority": "high"})
    res.check("auth: max_tier=low asking X-Priority: high: 403 tier_not_allowed",
              st == 403 and code_of(data) == "tier_not_allowed", f"{st} {data[:300]!r}")
    st, _, data = req(P, "POST", "/v1/completions", dict(gen, priority="background"), key=L)
    res.check("auth: max_tier=low asking priority background: 200", st == 200,
              f"{st} {data[:300]!r}")
    st, _, data = req(P, "POST", "/v1/completions", gen, key=L, headers={"X-Priority": "low"})
    res.check("auth: max_tier=low asking X-Priority: low: 200", st == 200, f"{st} {data[:300]!r}")
    st, _, data = req(P, "POST", "/v1/completions", dict(gen, priority="low"), key=L,
                      headers={"X-Priority": "critical"})
    res.check("auth: the body's priority wins over X-Priority (low over critical): 200",
              st == 200, f"{st} {data[:300]!r}")
    st_np, _, data_np = req(P, "POST", "/v1/completions", gen, key=L)
    res.check("auth: max_tier=low key without any priority: 200 (its default is its max tier)",
              st_np == 200, f"{st_np} {data_np[:200]!r}")
    st, _, data = req(P, "POST", "/v1/completions", gen, key=secrets["plain"],
                      headers={"X-Priority": "urgent"})
    res.check("auth: X-Priority: urgent (no such tier): 400", st == 400 and err_of(data),
              f"{st} {data[:300]!r}")
    st, _, data = req(P, "POST", "/v1/completions", dict(gen, priority="urgent"),
                      key=secrets["plain"])
    res.check("auth: body priority 'urgent': 400", st == 400 and err_of(data), f"{st} {data[:300]!r}")
    st, _, data = req(P, "POST", "/v1/completions", gen, key=secrets["ops"],
                      headers={"X-Priority": "critical"})
    res.check("auth: the admin key may ask critical", st == 200, f"{st} {data[:300]!r}")
    stop_all(ctx, res, "auth", coord, W)

    # Auth on without keys, or with a bad key spec: refuses to start.
    for name, extra, want in [("auth on and no api_keys", [], "api_keys"),
                              ("a malformed api_keys spec",
                               ["--api-keys", "bad sha256=zz role=admin"], "api_keys")]:
        p = subprocess.run([ctx.args.coordinator, "--listen", ctx.url(), "--register-listen",
                            ctx.url(), "--http-port", str(ctx.port()), "--auth=true",
                            "--models", f"{M} tokenizer=synthetic policy=round_robin", *extra],
                           capture_output=True, timeout=60)
        err = p.stderr.decode("utf-8", "replace")
        res.check(f"auth: the coordinator refuses to start with {name} (exit 2, clear message)",
                  p.returncode == 2 and want in err and
                  not any(m in err for m in itest.SANITIZER_MARKS), f"rc={p.returncode} {err[-600:]!r}")


# ---- 3. admission: bounded queues and deadlines --------------------------------------------
def admission(ctx, res):
    M = "syn-q"
    coord, rpc, reg = start_coord(ctx, "coord-adm", [f"{M} tokenizer=synthetic policy=least_loaded"],
                                  "--queue-normal", "2")
    W = [ctx.worker("adm-1", reg, M, step_us=200000)]
    if not res.check("admission: the slow worker is ready", wait_health(coord.http, 1)):
        return
    P = coord.http
    n = 8
    out = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        try:
            st, _, data = req(P, "POST", "/v1/completions",
                              {"model": M, "prompt": f"queue {i}", "max_tokens": 2})
            out[i] = (st, code_of(data) if st != 200 else None)
        except Exception as e:  # noqa: BLE001
            out[i] = (None, repr(e))
    t0 = time.time()
    ths = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    took = time.time() - t0
    ok = sum(1 for o in out if o and o[0] == 200)
    full = sum(1 for o in out if o == (429, "queue_full"))
    res.check(f"admission: queue_normal=2, {n} concurrent requests: some 429 queue_full, the "
              "rest 200, nothing else", full >= 1 and ok >= 2 and ok + full == n,
              f"200: {ok}, 429 queue_full: {full}, all: {out}, {took:.1f}s")
    # The refused ones were answered at once, not after waiting.
    seq = [req(P, "POST", "/v1/completions", {"model": M, "prompt": "after", "max_tokens": 1})[0]
           for _ in range(3)]
    res.check("admission: after the burst the queue slots are free again (3 requests 200)",
              seq == [200] * 3, str(seq))
    st, h, data = req(P, "POST", "/v1/completions", {"model": M, "prompt": "x", "max_tokens": 1},
                      headers={"X-Deadline-Ms": "1"})
    res.check("admission: X-Deadline-Ms: 1 below the worker's TTFT: 429 deadline_unmeetable",
              st == 429 and code_of(data) == "deadline_unmeetable", f"{st} {data[:300]!r}")
    st, h, data = req(P, "POST", "/v1/completions", {"model": M, "prompt": "x", "max_tokens": 1},
                      headers={"X-Deadline-Ms": "60000"})
    res.check("admission: X-Deadline-Ms: 60000: 200", st == 200, f"{st} {data[:300]!r}")
    for bad in ("abc", "0", "-5", "1e3", "99999999999999999999"):
        st, h, data = req(P, "POST", "/v1/completions",
                          {"model": M, "prompt": "x", "max_tokens": 1},
                          headers={"X-Deadline-Ms": bad})
        res.check(f"admission: X-Deadline-Ms: {bad}: 400", st == 400 and err_of(data),
                  f"{st} {data[:300]!r}")
    text = metrics(P)
    qf = metric_sum(text, "llm_coord_admission_refused_total", reason="queue_full")
    du = metric_sum(text, "llm_coord_admission_refused_total", reason="deadline")
    res.check("admission: /metrics llm_coord_admission_refused_total counts both reasons",
              qf >= full and du >= 1, f"queue_full={qf} deadline={du} " +
              " | ".join(l for l in text.splitlines() if "admission_refused" in l)[:600])
    c429 = metric_sum(text, "llm_http_requests_total", route="completions", code="429")
    res.check("admission: /metrics llm_http_requests_total{route=completions,code=429}",
              c429 >= full + 1, f"{c429}")
    stop_all(ctx, res, "admission", coord, W)


# ---- 4. tracing -----------------------------------------------------------------------------
def tracing(ctx, res):
    M = "syn-t"
    coord, rpc, reg = start_coord(ctx, "coord-trace", [f"{M} tokenizer=synthetic policy=round_robin"])
    W = [ctx.worker("tr-1", reg, M, step_us=1000)]
    if not res.check("tracing: worker ready", wait_health(coord.http, 1)):
        return
    P = coord.http
    tid, pid = os.urandom(16).hex(), os.urandom(8).hex()
    tp = f"00-{tid}-{pid}-01"
    st, h, data = req(P, "POST", "/v1/completions", {"model": M, "prompt": "trace me",
                                                     "max_tokens": 3}, headers={"traceparent": tp})
    m = TRACEPARENT.match(h.get("traceparent", ""))
    res.check("tracing: the reply's traceparent keeps the trace id, with a new parent id",
              st == 200 and m is not None and m.group(1) == tid and m.group(2) != pid and
              m.group(3) == "01", f"{st} sent {tp} got {h.get('traceparent')!r}")
    coord_log, worker_log = os.path.join(ctx.tmp, "coord-trace.log"), os.path.join(ctx.tmp, "tr-1.log")

    def lines(path):
        with open(path, errors="replace") as f:
            return [l for l in f if tid in l]

    def found():
        cl, wl = lines(coord_log), lines(worker_log)
        return all(any(f"event={e}" in l for l in cl) for e in ("http_generate", "request_done")) \
            and all(any(f"event={e}" in l for l in wl) for e in ("request_accepted", "request_done"))
    ok = itest.wait_until(found, 5, 0.1)
    res.check("tracing: the trace id on the coordinator's http_generate and request_done lines "
              "and the worker's request_accepted and request_done lines", ok,
              f"coordinator: {lines(coord_log)} worker: {lines(worker_log)}")
    # Streamed, with its own trace.
    tid2 = os.urandom(16).hex()
    st, h, data = req(P, "POST", "/v1/chat/completions",
                      {"model": M, "stream": True, "max_tokens": 3,
                       "messages": [{"role": "user", "content": "x"}]},
                      headers={"traceparent": f"00-{tid2}-{os.urandom(8).hex()}-00"})
    m = TRACEPARENT.match(h.get("traceparent", ""))
    res.check("tracing: a streamed reply carries the traceparent too (flags kept)",
              st == 200 and m is not None and m.group(1) == tid2 and m.group(3) == "00",
              f"{st} {h.get('traceparent')!r}")
    for name, bad in [("all-zero trace id", f"00-{'0' * 32}-{pid}-01"),
                      ("not hex", f"00-{'z' * 32}-{pid}-01"),
                      ("uppercase hex", f"00-{tid.upper()}-{pid}-01"),
                      ("garbage", "hello"),
                      ("too long", tp + "-00")]:
        st, h, data = req(P, "POST", "/v1/completions", {"model": M, "prompt": "x",
                                                         "max_tokens": 1},
                          headers={"traceparent": bad})
        m = TRACEPARENT.match(h.get("traceparent", ""))
        res.check(f"tracing: an invalid traceparent ({name}) gets a new valid trace",
                  st == 200 and m is not None and m.group(1) not in (tid, "0" * 32) and
                  m.group(1) not in bad.lower(), f"{st} {h.get('traceparent')!r}")
    st, h, data = req(P, "POST", "/v1/completions", {"model": M, "prompt": "x", "max_tokens": 1})
    res.check("tracing: a request without traceparent gets one",
              st == 200 and TRACEPARENT.match(h.get("traceparent", "")) is not None,
              f"{h.get('traceparent')!r}")
    st, h, data = req(P, "GET", "/v1/nothing-here", headers={"traceparent": tp})
    m = TRACEPARENT.match(h.get("traceparent", ""))
    res.check("tracing: error replies carry the traceparent too",
              st == 404 and m is not None and m.group(1) == tid, f"{st} {h.get('traceparent')!r}")
    stop_all(ctx, res, "tracing", coord, W)


# ---- 5. abuse -------------------------------------------------------------------------------
def abuse(ctx, res):
    M, SLOW = "syn-b", "syn-slow"
    coord, rpc, reg = start_coord(ctx, "coord-abuse",
                                  [f"{M} tokenizer=synthetic policy=round_robin",
                                   f"{SLOW} tokenizer=synthetic policy=round_robin"],
                                  "--http-max-body-bytes", "65536", "--http-timeout-s", "2")
    W = [ctx.worker(f"ab-{i}", reg, M, step_us=1000) for i in (1, 2)]
    W.append(ctx.worker("ab-slow", reg, SLOW, step_us=50000))
    if not res.check("abuse: 3 workers ready", wait_health(coord.http, 3)):
        return
    P = coord.http
    good = {"model": M, "prompt": "still here", "max_tokens": 3}

    def post(body, path="/v1/completions", **kw):
        return req(P, "POST", path, body, headers={"Content-Type": "application/json"}, **kw)
    cases = [
        ("malformed JSON", b'{"model": "syn-b", "prompt": "x", '),
        ("not JSON at all", b"hello there"),
        ("wrong type (max_tokens a string)", b'{"model":"syn-b","prompt":"x","max_tokens":"3"}'),
        ("wrong type (model a number)", b'{"model":7,"prompt":"x"}'),
        ("wrong type (messages an object)", b'{"model":"syn-b","messages":{"role":"user"}}'),
        ("a JSON array body", b'[{"model":"syn-b","prompt":"x"}]'),
        ("a JSON string body", b'"syn-b"'),
        ("an empty body", b""),
        ("bad UTF-8 in a string", b'{"model":"syn-b","prompt":"caf\xc3 \xff\xfe","max_tokens":2}'),
        ("an overlong UTF-8 encoding", b'{"model":"syn-b","prompt":"\xc0\xaf","max_tokens":2}'),
        ("a lone surrogate escape", b'{"model":"syn-b","prompt":"\\ud800x","max_tokens":2}'),
        ("a NUL in a string", b'{"model":"syn-b","prompt":"a\\u0000b","max_tokens":2}'),
        ("deep nesting", b'{"model":"syn-b","prompt":' + b"[" * 30000 + b"]" * 30000 + b"}"),
        ("a huge number", b'{"model":"syn-b","prompt":"x","max_tokens":1e400}'),
        ("trailing garbage", b'{"model":"syn-b","prompt":"x","max_tokens":2} xyz'),
    ]
    for name, body in cases:
        st, _, data = post(body)
        res.check(f"abuse: {name}: 400 in OpenAI's shape", st == 400 and err_of(data) is not None,
                  f"{st} {data[:300]!r}")
    st, _, data = post(b'{"model":"syn-b","prompt":"x","prompt":"yy","max_tokens":2}')
    print(f"NOTE a duplicate key (prompt 'x' then 'yy'): {st} {data[:300]!r}")
    st, _, data = post(b'[1]', path="/v1/chat/completions")
    res.check("abuse: chat with a JSON array body: 400", st == 400, f"{st} {data[:200]!r}")
    st, _, data = post(b'{"worker": 5}', path="/admin/drain")
    res.check("abuse: /admin/drain with a wrong type: 400", st == 400, f"{st} {data[:200]!r}")

    # Bodies over the limit.
    big = b'{"model":"syn-b","prompt":"' + b"a" * 70000 + b'"}'
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(big)}\r\n\r\n").encode()
    got = raw_exchange(P, head, timeout=5)
    res.check("abuse: Content-Length over http_max_body_bytes: 413 before the body is sent",
              status_of(got) == 413 and b"body_too_large" in got, repr(got[:300]))
    got = raw_exchange(P, head + big, timeout=5)
    res.check("abuse: Content-Length over the limit with the body: 413",
              status_of(got) == 413, repr(got[:300]))
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunks = [b"%x\r\n" % len(big[i:i + 8192]) + big[i:i + 8192] + b"\r\n"
              for i in range(0, len(big), 8192)] + [b"0\r\n\r\n"]
    got = raw_exchange(P, head, chunks=chunks, timeout=5)
    res.check("abuse: a chunked body over the limit: 413 or closed, the coordinator lives",
              (status_of(got) == 413 or got == b"") and coord.alive(), repr(got[:300]))
    small = json.dumps(good).encode()
    chunks = [b"%x\r\n" % len(small[i:i + 7]) + small[i:i + 7] + b"\r\n"
              for i in range(0, len(small), 7)] + [b"0\r\n\r\n"]
    got = raw_exchange(P, head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
                       chunks=chunks, timeout=10)
    res.check("abuse: a small chunked body is read whole: 200", status_of(got) == 200,
              repr(got[:300]))
    got = raw_exchange(P, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 +
                       b"\r\n\r\n", timeout=5)
    res.check("abuse: a 200 KB header: refused (4xx) or closed",
              (got == b"" or 400 <= (status_of(got) or 0) < 500) and coord.alive(),
              repr(got[:200]))
    got = raw_exchange(P, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),
                       timeout=5)
    res.check("abuse: a TLS ClientHello: refused or closed, alive",
              (got == b"" or 400 <= (status_of(got) or 0) < 500) and coord.alive(),
              repr(got[:200]))

    # Paths and methods.
    st, _, data = req(P, "GET", "/v1/nope")
    res.check("abuse: unknown path: 404 unknown_url", st == 404 and code_of(data) == "unknown_url",
              f"{st} {data[:200]!r}")
    st, _, data = req(P, "POST", "/v2/completions", good)
    res.check("abuse: POST to an unknown path: 404", st == 404, f"{st}")
    st, h, data = req(P, "GET", "/v1/completions")
    res.check("abuse: GET /v1/completions: 405 with Allow: POST",
              st == 405 and h.get("allow") == "POST" and code_of(data) == "method_not_allowed",
              f"{st} allow={h.get('allow')!r} {data[:200]!r}")
    st, h, data = req(P, "DELETE", "/v1/models")
    res.check("abuse: DELETE /v1/models: 405 with Allow: GET",
              st == 405 and h.get("allow") == "GET", f"{st} allow={h.get('allow')!r}")
    st, h, data = req(P, "POST", "/health", b"{}")
    res.check("abuse: POST /health: 405", st == 405, f"{st}")

    # Slowloris: 50 sockets send a request head a byte at a time, then stall.
    n_slow = 50
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-"
    slow = [socket.create_connection(("127.0.0.1", P), timeout=10) for _ in range(n_slow)]
    # One more trickles a byte every 0.5 s for the whole phase (below the idle time-out).
    trickle = socket.create_connection(("127.0.0.1", P), timeout=10)
    stop_trickle = threading.Event()

    def trickler():
        for i in range(10000):
            if stop_trickle.wait(0.5):
                return
            try:
                trickle.send(b"X-A: b\r\n"[i % 8:i % 8 + 1] if i > 0 else b"G")
            except OSError:
                return
    tt = threading.Thread(target=trickler)
    tt.start()
    sent_bytes = 6
    for i in range(sent_bytes):
        for s in slow:
            try:
                s.send(head[i:i + 1])
            except OSError:
                pass
        time.sleep(0.15)
    last_byte = time.time()
    t0 = time.time()
    st, _, data = req(P, "POST", "/v1/completions", good, timeout=10)
    took = time.time() - t0
    res.check(f"abuse: slowloris: with {n_slow} dangling requests a normal one succeeds quickly",
              st == 200 and took < 1.5, f"{st} {took:.2f}s")
    closed_at = {}
    sel = selectors.DefaultSelector()
    for i, s in enumerate(slow):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    deadline = last_byte + 6
    while len(closed_at) < n_slow and time.time() < deadline:
        for key, _ in sel.select(timeout=0.2):
            try:
                key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                pass
            # closed (b""), or an error reply before closing: either way, let go
            closed_at[key.data] = time.time() - last_byte
            sel.unregister(key.fileobj)
    sel.close()
    times = sorted(closed_at.values())
    res.check(f"abuse: slowloris: the server closes all {n_slow} stalled sockets after "
              "http_timeout_s (2 s)", len(closed_at) == n_slow and times[0] >= 1.5,
              f"closed {len(closed_at)}, after {times[0]:.1f}..{times[-1]:.1f}s" if times
              else "none closed")
    for s in slow:
        s.close()
    trickle.settimeout(0.05)
    try:
        still = trickle.recv(1) != b""
    except socket.timeout:
        still = True
    except OSError:
        still = False
    stop_trickle.set()
    tt.join()
    trickle.close()
    print(f"NOTE slowloris: a socket trickling one header byte every 0.5 s for "
          f"{time.time() - last_byte + 1:.0f} s is {'still open' if still else 'closed'} "
          "(MHD's time-out is per idle period, not per request head)")

    # 1,000 concurrent connections.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2100
    if soft < want and (hard == resource.RLIM_INFINITY or hard > soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                    else want, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n_conn = 1000 if soft >= want else max(50, (soft - 100) // 2)
    name = f"abuse: {n_conn} concurrent connections" + \
        ("" if n_conn == 1000 else f" (fewer: RLIMIT_NOFILE hard limit {hard} < {want})")
    t0 = time.time()
    socks, replies, failures = [], {}, []
    try:
        for i in range(n_conn):
            s = socket.create_connection(("127.0.0.1", P), timeout=20)
            socks.append(s)
        t_conn = time.time() - t0
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
            replies[i] = b""
        done = set()
        deadline = time.time() + 30
        while len(done) < n_conn and time.time() < deadline:
            for key, _ in sel.select(timeout=0.5):
                try:
                    b = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    failures.append(repr(e))
                    b = b""
                if b:
                    replies[key.data] += b
                else:
                    done.add(key.data)
                    sel.unregister(key.fileobj)
        sel.close()
    finally:
        for s in socks:
            s.close()
    took = time.time() - t0
    codes = [status_of(replies.get(i, b"")) for i in range(n_conn)]
    n200 = codes.count(200)
    res.check(f"{name}: every one answered 200 (/health)",
              n200 == n_conn, f"200: {n200}, others: {[c for c in codes if c != 200][:10]} "
              f"failures: {failures[:3]} connect {t_conn:.1f}s total {took:.1f}s")
    print(f"NOTE {n_conn} connections: connected in {t_conn:.1f}s, all answered in {took:.1f}s")
    res.check(f"{name}: within 20 s", took < 20, f"{took:.1f}s")

    # A client that hangs up mid-stream cancels its request on the worker.
    gone0 = metric_sum(metrics(P), "llm_http_client_gone_total")
    body = json.dumps({"model": SLOW, "prompt": "long story", "max_tokens": 200,
                       "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", P), timeout=20)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    buf = b""
    while b"data: {" not in buf:
        b = s.recv(4096)
        if not b:
            break
        buf += b
    first_ok = status_of(buf) == 200 and b"data: {" in buf
    s.close()
    t_close = time.time()
    slow_log = os.path.join(ctx.tmp, "ab-slow.log")

    def canceled():
        with open(slow_log, errors="replace") as f:
            return [l for l in f if "event=request_done" in l and "finish=canceled" in l]
    got = itest.wait_until(canceled, 5, 0.05)
    t_cancel = time.time() - t_close
    res.check("abuse: disconnect mid-stream: the worker ends the request with finish=canceled "
              "within 2 s", first_ok and bool(got) and t_cancel < 2.0,
              f"first event: {first_ok} {buf[:120]!r}, after {t_cancel:.2f}s: {got}")
    gone = itest.wait_until(lambda: metric_sum(metrics(P), "llm_http_client_gone_total") >= gone0 + 1,
                            3, 0.1)
    res.check("abuse: disconnect mid-stream: llm_http_client_gone_total counts it", bool(gone),
              f"before {gone0}, after {metric_sum(metrics(P), 'llm_http_client_gone_total')}")
    def slow_idle():
        st, _, data = req(P, "GET", "/admin/workers")
        w = {x["id"]: x for x in json.loads(data)["data"]} if st == 200 else {}
        x = w.get("ab-slow", {})
        return x if x.get("inflight") == 0 and x.get("running") == 0 else None
    idle = itest.wait_until(slow_idle, 3, 0.1)
    res.check("abuse: disconnect mid-stream: nothing left in flight or running on the worker",
              bool(idle), req(P, "GET", "/admin/workers")[2][:600])
    # The stream's reader is gone, so its end is never read: it leaves the relay's table
    # after the short read grace (2 s), not finished_ttl_ms (30 s).
    gone_from_table = itest.wait_until(
        lambda: json.loads(req(P, "GET", "/admin/workers")[2])["requests_active"] == 0, 6, 0.2)
    res.check("abuse: disconnect mid-stream: the stream leaves the relay's table within seconds",
              bool(gone_from_table), req(P, "GET", "/admin/workers")[2][-200:])

    # Still serving.
    st, _, data = req(P, "POST", "/v1/completions", good)
    st2, _, data2 = req(P, "POST", "/v1/chat/completions",
                        {"model": SLOW, "max_tokens": 2,
                         "messages": [{"role": "user", "content": "ok?"}]})
    res.check("abuse: afterwards normal requests succeed and the coordinator lives",
              st == 200 and st2 == 200 and coord.alive(), f"{st} {st2} {data[:200]!r}")
    stop_all(ctx, res, "abuse", coord, W)


# ---- 6. schemathesis against docs/openapi.yaml -----------------------------------------------
def schemathesis(ctx, res):
    import yaml
    exe = os.path.join(ROOT, ".venv", "bin", "schemathesis")
    if not os.access(exe, os.X_OK):
        res.skip("schemathesis", f"{exe} not installed (scripts/setup.sh)")
        return
    M = "syn-s"
    admin = f"sk-admin-{os.urandom(8).hex()}"
    coord, rpc, reg = start_coord(ctx, "coord-st", [f"{M} tokenizer=synthetic policy=round_robin"],
                                  keys=[key_spec("ops", admin, "role=admin")])
    # A context of 64 Ki tokens: a chat of 1024 short messages (the spec's maximum) fits.
    W = [ctx.worker(f"st-worker-{i}", reg, M, step_us=20, extra=("--synthetic-ctx", "65536"))
         for i in (1, 2)]
    if not res.check("schemathesis: 2 workers ready", wait_health(coord.http, 2)):
        return
    spec = os.path.join(ROOT, "docs", "openapi.yaml")
    with open(spec) as f:
        doc = yaml.safe_load(f)
    # A copy whose generated requests name the served model (otherwise nearly every
    # generation request stops at 404 model_not_found).
    # Token ids, likewise, must be in the served model's vocabulary (the synthetic engine's
    # is bytes and its end-of-generation token, 0..256); the spec cannot know it.
    for s in ("CompletionRequest", "ChatCompletionRequest"):
        doc["components"]["schemas"][s]["properties"]["model"] = {"type": "string", "enum": [M]}
    doc["components"]["schemas"]["TokenIds"]["items"]["maximum"] = 256
    # And max_tokens its context (prompt included; 4000 leaves room for any prompt
    # schemathesis makes).
    for s in ("CompletionRequest", "ChatCompletionRequest"):
        for f in ("max_tokens", "max_completion_tokens"):
            if f in doc["components"]["schemas"][s]["properties"]:
                doc["components"]["schemas"][s]["properties"][f]["maximum"] = 4000
    pinned = os.path.join(ctx.tmp, "openapi-pinned.yaml")
    with open(pinned, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    n = "8" if ctx.args.quick else "25"
    # The pinned copy is narrower than what the server accepts (limits of this model), so
    # its schema-violating requests may rightly succeed: no negative_data_rejection there
    # (the run on docs/openapi.yaml as written has every check).
    for name, path, skip in (("docs/openapi.yaml", spec, []),
                             ("model pinned", pinned,
                              ["--exclude-checks", "negative_data_rejection"])):
        report = os.path.join(ctx.tmp, f"st-{name.replace('/', '_').replace(' ', '_')}")
        cmd = [exe, "run", path, "--url", f"http://127.0.0.1:{coord.http}",
               "-H", f"Authorization: Bearer {admin}", "--checks", "all", "-n", n,
               "--seed", "20240601", "--workers", "1", "--request-timeout", "60",
               "--no-color", "--generation-database", "none", "--max-failures", "20",
               "--suppress-health-check", "all", "--report", "junit,har",
               # The spec says it in words: request strings never hold NUL (the server
               # refuses \u0000 anywhere in a body, even in free-form objects such as
               # metadata, which a schema cannot express).
               "--generation-allow-x00", "false",
               "--report-dir", report] + skip
        t0 = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=400, cwd=ctx.tmp,
                               env=dict(os.environ, SCHEMATHESIS_HOOKS=""))
            rc, out = p.returncode, p.stdout.decode("utf-8", "replace") + \
                p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired as e:
            rc, out = None, (e.stdout or b"").decode("utf-8", "replace")
        with open(report + ".log", "w") as f:
            f.write(out)
        summary = "\n".join(l for l in out.splitlines()[-12:] if l.strip())
        res.check(f"schemathesis ({name}, -n {n}, {'every check' if not skip else 'checks but negative_data_rejection'}): exit 0", rc == 0,
                  f"rc={rc} ({time.time() - t0:.0f}s); log {report}.log\n{out[-6000:]}")
        print(f"NOTE schemathesis {name}: {time.time() - t0:.0f}s: {summary[-400:]}")
        res.check(f"schemathesis ({name}): the coordinator lives", coord.alive(),
                  coord.stderr()[-2000:])
    stop_all(ctx, res, "schemathesis", coord, W)


# ---- 7. scripts/cluster.sh serves HTTP ------------------------------------------------------
def cluster_sh(ctx, res):
    http_port = ctx.port()
    c = ctx.cluster_script(res, ctx.url(), http_port)
    if not c:
        return
    env, sh, pids, run_dir = c
    try:
        rc, out, err = sh("up")
        res.check("cluster.sh up (synthetic, LLM_HTTP_PORT): exit 0, HTTP port announced",
                  rc == 0 and f"http://127.0.0.1:{http_port}" in out, f"rc={rc} {out[-600:]} {err[-1500:]}")
        body = json.dumps({"model": "synthetic", "stream": True, "max_tokens": 8,
                           "messages": [{"role": "user", "content": "hello cluster"}]})
        p = subprocess.run(["curl", "-sN", "-H", "Content-Type: application/json", "-d", body,
                            f"http://127.0.0.1:{http_port}/v1/chat/completions"],
                           capture_output=True, timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        ev = [e for e in parse_sse(out) if not e["comment"]]
        text = ""
        try:
            for e in ev[:-1]:
                d = json.loads(e["data"])
                text += d["choices"][0]["delta"].get("content", "") if d["choices"] else ""
        except (TypeError, ValueError, KeyError, IndexError):
            text = None
        res.check("cluster.sh: curl -N streams a chat through HTTP, [DONE]-terminated",
                  p.returncode == 0 and ev and ev[-1]["data"] == "[DONE]" and text is not None
                  and len(text) == 8, f"rc={p.returncode} {out[-600:]!r}")
        first = pids()
        rc, out, err = sh("down")
        gone = itest.wait_until(lambda: not any(pid_alive(p) for p in first.values()), 10, 0.1)
        res.check("cluster.sh down: every process stops", rc == 0 and gone and not pids(),
                  f"rc={rc} {out} {err}")
        log = os.path.join(run_dir, "coordinator.log")
        with open(log, errors="replace") as f:
            text = f.read()
        res.check("cluster.sh: the coordinator's log has no sanitizer reports",
                  not any(m in text for m in itest.SANITIZER_MARKS), text[-1500:])
    finally:
        sh("down")
        for p in pids().values():
            if pid_alive(p):
                os.kill(p, 9)


def pid_alive(pid):
    from test_coordinator import pid_alive as alive
    return alive(pid)


# ---- 8. the real model: HTTP equals RPC -----------------------------------------------------
def model(ctx, res):
    a = ctx.args
    if not os.path.exists(a.model):
        res.skip("model", f"model {a.model} not found (run scripts/setup.sh)")
        return
    name = os.path.basename(a.model)[:-len(".gguf")]
    coord, rpc, reg = start_coord(ctx, "coord-model", [f"{name} tokenizer={a.model} "
                                                       "policy=round_robin"])
    W = [ctx.worker("md-1", reg, model=True)]
    if not res.check("model: the model worker is ready", wait_health(coord.http, 1, 180)):
        return
    prompts = ["What is the capital of France?"] if a.quick else \
        ["What is the capital of France?", "Write a haiku about C."]
    c = client(coord.http)
    for q in prompts:
        r = c.chat.completions.create(model=name, messages=[{"role": "user", "content": q}],
                                      temperature=0, max_tokens=16)
        rc, out, err = ctx.ctl(rpc, "chat", "--model", name, "--temperature", "0",
                               "--max-tokens", "16", q, timeout_s=180)
        got = r.choices[0].message.content
        res.check(f"model: greedy chat through the openai package == llmctl chat ({q!r})",
                  rc == 0 and got.strip() == out.strip() and r.usage.completion_tokens <= 16,
                  f"http={got!r} rpc={out!r} rc={rc} {err.strip()[-300:]}")
        chunks = list(c.chat.completions.create(model=name, stream=True, temperature=0,
                                                max_tokens=16,
                                                messages=[{"role": "user", "content": q}]))
        text = "".join(x.choices[0].delta.content or "" for x in chunks if x.choices)
        res.check(f"model: streamed greedy chat == not streamed ({q!r})", text == got,
                  f"{text!r} vs {got!r}")
    stop_all(ctx, res, "model", coord, W)


SECTIONS = (openai_compat, auth, admission, tracing, abuse, schemathesis, cluster_sh, model)


def main():
    ap = itest.parser(__doc__)
    ap.add_argument("--coordinator", required=True, help="path to llm-coordinator")
    ap.add_argument("--ctl", required=True, help="path to llmctl")
    ap.add_argument("--load", help="path to llm-load (unused; the same arguments as "
                    "test_coordinator.py)")
    ap.add_argument("--fake-worker", help="path to fake_worker (unused, as --load)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer examples and iterations (sanitizer builds)")
    ap.add_argument("--only", default=",".join(f.__name__ for f in SECTIONS),
                    help="comma-separated sections to run (for debugging)")
    args = ap.parse_args()
    return run_sections(args, "llm-http-", SECTIONS)


if __name__ == "__main__":
    sys.exit(main())
