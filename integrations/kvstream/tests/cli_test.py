#!/usr/bin/env python3
"""CLI tests of `kvstream sweep`, `inspect`, `bench`, `compare` and GGUF models (registered with CTest; stdlib only).

Usage: cli_test.py {sweep|inspect|gguf|chat_template|bench|compare} --kvstream BIN --model M --tokenizer T --text F [--gguf G]
Each test runs the binary into a temporary directory and checks what it wrote. A PNG is required
only when an interpreter kvstream would use (python3, /usr/bin/python3) can import matplotlib;
otherwise the test checks the warning instead and says that the PNG check was skipped.
"""
import argparse
import csv
import json
import math
import os
import signal
import struct
import subprocess
import sys
import tempfile

TOKENS = "600"  # the first ~600 tokens: a few seconds for the whole grid, even under ASan


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def run(args, expect=0):
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != expect:
        fail(f"{' '.join(args)} exited {p.returncode}, expected {expect}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def matplotlib_available():
    for py in ("python3", "/usr/bin/python3"):
        try:
            if subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode == 0:
                return True
        except OSError:
            pass
    return False


def check_png(path, stderr):
    if matplotlib_available():
        check(os.path.isfile(path), f"{path} missing although matplotlib is available\nstderr:\n{stderr}")
        with open(path, "rb") as f:
            check(f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG")
    else:
        check("warning: no" in stderr, f"no plot and no warning\nstderr:\n{stderr}")
        print(f"SKIP: matplotlib not available, {os.path.basename(path)} not checked")


def test_sweep(a, tmp):
    model = ["--model", a.model, "--tokenizer", a.tokenizer]
    out = os.path.join(tmp, "sweep")
    p = run([a.kvstream, "sweep", *model, "--text", a.text, "--max-tokens", TOKENS, "--policies", "sinks,window",
             "--budgets", "64,32", "--jobs", "2", "--out", out])
    with open(os.path.join(out, "sweep.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    check(len(rows) == 4, f"expected 4 rows, got {len(rows)}")
    for col in ("policy", "budget", "kv_bytes", "ppl", "tokens_per_second", "sinks", "window", "tokens_scored",
                "kv_dtype", "page_tokens"):
        check(col in rows[0], f"column {col} missing from sweep.csv")
    check([(r["policy"], r["budget"]) for r in rows] == [("sinks", "32"), ("sinks", "64"), ("window", "32"),
                                                         ("window", "64")], f"rows out of order: {rows}")
    for r in rows:
        check(math.isfinite(float(r["ppl"])) and float(r["ppl"]) > 1, f"bad ppl {r['ppl']}")
        check(float(r["tokens_per_second"]) > 0, "tokens_per_second not positive")
        check(r["tokens_scored"] == str(int(TOKENS) - 1), f"tokens_scored {r['tokens_scored']}")
        check(r["kv_dtype"] == "f32" and r["page_tokens"] == "16", "cache columns wrong")
    for policy in ("sinks", "window"):
        kv = [int(r["kv_bytes"]) for r in rows if r["policy"] == policy]
        check(kv[0] < kv[1], f"{policy}: kv_bytes does not grow with the budget: {kv}")

    with open(os.path.join(out, "sweep.json")) as f:
        sweep = json.load(f)
    check(len(sweep["points"]) == 4 and sweep["complete"], "sweep.json points/complete")
    for point, row in zip(sweep["points"], rows):
        check(point["policy"] == row["policy"] and point["ppl"] == float(row["ppl"]), "JSON and CSV disagree")
        segs = point["segments"]
        check(segs and segs[0]["begin"] == 0 and segs[-1]["end"] == int(TOKENS) - 1, f"segments {segs}")
        # The same flags through `kvstream ppl`: one scoring loop, so bit-identical perplexity.
        ppl = json.loads(run([a.kvstream, "ppl", *model, "--text", a.text, "--max-tokens", TOKENS, "--policy",
                              point["policy"], "--budget", str(point["budget"]), "--json"]).stdout)
        check(ppl["ppl"] == point["ppl"], f"{point['policy']}/{point['budget']}: sweep ppl {point['ppl']!r} != "
                                          f"ppl {ppl['ppl']!r}")
        check(ppl["kv_bytes_peak"] == point["kv_bytes"], "kv bytes differ from ppl's")
    check_png(os.path.join(out, "sweep.png"), p.stderr)

    # full runs once, without a budget; the plot is optional when no interpreter can be started.
    out2 = os.path.join(tmp, "sweep2")
    p = run([a.kvstream, "sweep", *model, "--text", a.text, "--max-tokens", "200", "--policies", "full,sinks",
             "--budgets", "32", "--out", out2, "--python", os.path.join(tmp, "no-such-python")])
    check("warning: no sweep.png plot" in p.stderr, f"missing-python warning absent: {p.stderr}")
    with open(os.path.join(out2, "sweep.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    check([(r["policy"], r["budget"]) for r in rows] == [("full", ""), ("sinks", "32")], f"full rows: {rows}")
    check(not os.path.exists(os.path.join(out2, "sweep.png")), "a PNG without python?")

    # The dtype axis: one row per dtype, each equal to `ppl` with that --kv-dtype and --pinned-dtype,
    # and kv_bytes (pages + q4 key copies) shrinking with the dtype.
    out3 = os.path.join(tmp, "sweep3")
    run([a.kvstream, "sweep", *model, "--text", a.text, "--max-tokens", "150", "--policies", "sinks",
         "--budgets", "48", "--kv-dtypes", "f32,q8,q4", "--pinned-dtype", "f16", "--no-plot", "--out", out3])
    with open(os.path.join(out3, "sweep.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    check([(r["kv_dtype"], r["pinned_dtype"]) for r in rows] == [("f32", "f16"), ("q8", "f16"), ("q4", "f16")],
          f"dtype rows: {rows}")
    sizes = [int(r["kv_bytes"]) for r in rows]
    check(sizes[0] > sizes[1] > sizes[2] > 0, f"kv_bytes by dtype: {sizes}")
    check(int(rows[2]["kv_staging_bytes"]) > 0 and int(rows[1]["kv_staging_bytes"]) == 0, "staging bytes")
    ppl = json.loads(run([a.kvstream, "ppl", *model, "--text", a.text, "--max-tokens", "150", "--policy", "sinks",
                          "--budget", "48", "--kv-dtype", "q4", "--pinned-dtype", "f16", "--json"]).stdout)
    check(ppl["ppl"] == float(rows[2]["ppl"]) and ppl["kv_bytes_used"] == sizes[2],
          f"q4 point {rows[2]} != ppl {ppl['ppl']!r} / {ppl['kv_bytes_used']}")

    # A bad grid point fails up front with one line naming it.
    p = run([a.kvstream, "sweep", *model, "--text", a.text, "--max-tokens", "100", "--policies", "sinks",
             "--budgets", "4", "--out", os.path.join(tmp, "bad")], expect=1)
    check(p.stderr.count("\n") == 1 and "sinks budget 4" in p.stderr, f"bad error line: {p.stderr!r}")


def test_inspect(a, tmp):
    out = os.path.join(tmp, "inspect")
    p = run([a.kvstream, "inspect", "--model", a.model, "--tokenizer", a.tokenizer, "--text", a.text,
             "--max-tokens", "160", "--min-age", "16", "--out", out])
    with open(os.path.join(out, "sinks.json")) as f:
        rep = json.load(f)
    with open(os.path.join(out, "inspect.json")) as f:
        meta = json.load(f)
    L, H, T = rep["n_layers"], rep["n_heads"], rep["n_tokens"]
    check(T == 160 and meta["n_tokens"] == T and len(meta["tokens"]) == T, "token count")
    check(len(rep["per_head"]) == L * H, "per_head must list every (layer, head)")
    check(len(rep["initial_tokens"]) == rep["initial_sinks"] == 4, "initial_tokens")
    for t in rep["initial_tokens"]:
        check(math.isfinite(t["mean_share"]) and t["mean_share"] >= 0, f"initial token {t}")
    check(rep["sinks"], "the detector found no sink at all in 160 tokens (it finds several)")
    for s in rep["sinks"]:
        for key in ("pos", "token", "piece", "kind", "heads", "n_heads", "mean_share", "max_share", "pinned"):
            check(key in s, f"sink lacks {key}: {s}")
        check(s["kind"] == ("initial" if s["pos"] < 4 else "hidden"), f"kind of {s}")
        check(s["pos"] <= T - 1 - rep["min_age"], f"sink younger than --min-age: {s}")
        check(s["n_heads"] == len(s["heads"]) >= 1, f"heads of {s}")
        check(all(0 <= l < L and 0 <= h < H for l, h in s["heads"]), f"head out of range in {s}")
        check(math.isfinite(s["mean_share"]) and s["max_share"] >= s["mean_share"] > 0, f"shares of {s}")
        for l, h in s["heads"]:
            entry = rep["per_head"][l * H + h]
            check(s["pos"] in entry[s["kind"]], f"per_head[{l},{h}] misses {s['pos']}")
    for l, name in enumerate(meta["files"]):
        size = os.path.getsize(os.path.join(out, name))
        check(size == H * T * T * 4, f"{name}: {size} bytes, expected {H * T * T * 4}")
    check("pos" in p.stdout and "kind" in p.stdout, "no sink table on stdout")

    # Gu et al.'s metric on token 0, recomputed from the raw dump: per head, the mean over queries
    # 1..T-1 of their attention on key 0; per layer, the heads above epsilon.
    import array
    t0 = rep["token0"]
    check(t0["epsilon"] == 0.3 and t0["queries"] == T - 1 and len(t0["layers"]) == L, f"token0: {t0}")
    above = 0
    for l, name in enumerate(meta["files"]):
        att = array.array("f")
        with open(os.path.join(out, name), "rb") as f:
            att.frombytes(f.read())
        means = [math.fsum(att[(h * T + q) * T] for q in range(1, T)) / (T - 1) for h in range(H)]
        got = t0["layers"][l]["mean_attention"]
        check(all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(means, got)),
              f"layer {l}: token-0 attention {got} != {means} from {name}")
        n = sum(m > 0.3 for m in means)
        check(t0["layers"][l]["heads_above"] == n, f"layer {l}: heads_above {t0['layers'][l]}")
        above += n
    check(t0["heads_above"] == above and math.isclose(t0["share_above"], above / (L * H)), f"totals: {t0}")
    check("Gu et al.'s sink metric" in p.stdout, "no token-0 table on stdout")
    p0 = run([a.kvstream, "inspect", "--model", a.model, "--tokenizer", a.tokenizer, "--text", a.text,
              "--max-tokens", "40", "--sink-epsilon", "0", "--no-plot", "--out", os.path.join(tmp, "eps0")])
    with open(os.path.join(tmp, "eps0", "sinks.json")) as f:
        check(json.load(f)["token0"]["heads_above"] == L * H, f"epsilon 0: every head is above: {p0.stdout}")
    check_png(os.path.join(out, "attention_layer0.png"), p.stderr)
    if os.path.exists(os.path.join(out, "attention_layer0.png")):
        for l in range(L):
            check(os.path.isfile(os.path.join(out, f"attention_layer{l}.png")), f"attention_layer{l}.png")
        check(os.path.isfile(os.path.join(out, "sinks_overview.png")), "sinks_overview.png")


def test_gguf(a, tmp):
    """The same model as a GGUF file (llama.cpp's converter): same text, same perplexity, the
    tokenizer from the file, and reports that name the architecture and the tensor types."""
    gguf = a.gguf
    bin_model = ["--model", a.model, "--tokenizer", a.tokenizer]
    gen = ["generate", "-n", "60", "--temperature", "0", "--seed", "1", "-q"]
    want = run([a.kvstream, *gen, *bin_model]).stdout
    got = run([a.kvstream, *gen, "--model", gguf]).stdout
    check(got == want and len(want) > 100, f"greedy text differs:\n{got!r}\n{want!r}")
    # --weights memory: the file read into a private copy gives the same text; bad words are refused.
    got = run([a.kvstream, *gen, "--model", gguf, "--weights", "memory"]).stdout
    check(got == want, f"greedy text with --weights memory differs:\n{got!r}\n{want!r}")
    p = run([a.kvstream, *gen, "--model", gguf, "--weights", "ram"], expect=2)
    check("--weights" in p.stderr and p.stderr.count("\n") == 1, f"bad --weights error: {p.stderr!r}")
    p = run([a.kvstream, *gen, "--model", gguf, "--tokenizer", a.tokenizer], expect=1)
    check("cannot be used with the GGUF model" in p.stderr and p.stderr.count("\n") == 1,
          f"bad --tokenizer error: {p.stderr!r}")
    ppl = ["ppl", "--text", a.text, "--max-tokens", "300", "--policy", "sinks", "--budget", "64", "--json"]
    jb = json.loads(run([a.kvstream, *ppl, *bin_model]).stdout)
    jg = json.loads(run([a.kvstream, *ppl, "--model", gguf]).stdout)
    check(abs(jg["ppl"] - jb["ppl"]) <= 1e-9 * jb["ppl"], f"ppl {jg['ppl']} vs {jb['ppl']}")
    m = jg["model"]
    check(m["format"] == "gguf" and m["architecture"] == "llama" and m["tensor_types"] == {"f32": 48},
          f"ppl --json model: {m}")
    check(m["tokenizer"]["model"] == "llama" and m["tokenizer"]["bos"] == 1, f"tokenizer: {m['tokenizer']}")
    check(jb["model"]["format"] == "llama2.c" and jb["model"]["tensor_types"] == {"f32": 47}, f"{jb['model']}")
    out = os.path.join(tmp, "inspect")
    p = run([a.kvstream, "inspect", "--model", gguf, "--text", a.text, "--max-tokens", "64", "--no-plot",
             "--out", out])
    with open(os.path.join(out, "sinks.json")) as f:
        rep = json.load(f)
    check(rep["model"]["architecture"] == "llama" and rep["model"]["tensor_types"] == {"f32": 48}, "inspect model")
    check("gguf llama" in p.stdout and "f32 x48" in p.stdout, f"inspect stdout: {p.stdout[:300]}")


def gguf_with_chat_template(src, dst, template):
    """Copies the GGUF file `src` to `dst` with tokenizer.chat_template = `template` added (the
    tensor data moves to the new, aligned data offset; tensor offsets are relative to it)."""
    with open(src, "rb") as f:
        b = f.read()
    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", b, 0)
    check(magic == b"GGUF", f"{src} is not a GGUF file")
    at = 24
    fixed = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def string(at):
        (n,) = struct.unpack_from("<Q", b, at)
        return b[at + 8:at + 8 + n], at + 8 + n

    def value(t, at):
        if t in fixed:
            return at + fixed[t]
        if t == 8:
            return string(at)[1]
        et, count = struct.unpack_from("<IQ", b, at)
        at += 12
        for _ in range(count):
            at = value(et, at)
        return at

    alignment = 32
    for _ in range(n_kv):
        key, at = string(at)
        (t,) = struct.unpack_from("<I", b, at)
        if key == b"general.alignment":
            (alignment,) = struct.unpack_from("<I", b, at + 4)
        at = value(t, at + 4)
    kv_end = at
    for _ in range(n_tensors):
        _, at = string(at)
        (n_dims,) = struct.unpack_from("<I", b, at)
        at += 4 + 8 * n_dims + 4 + 8
    infos_end = at
    data = b[(infos_end + alignment - 1) // alignment * alignment:]
    key, text = b"tokenizer.chat_template", template.encode()
    kv = struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(text)) + text
    head = struct.pack("<4sIQQ", magic, version, n_tensors, n_kv + 1) + b[24:kv_end] + kv + b[kv_end:infos_end]
    head += b"\0" * (-len(head) % alignment)
    with open(dst, "wb") as f:
        f.write(head + data)


def serve_startup(a, model, tmp, *flags):
    """Starts `kvstream serve` on `model`; (exit status, stderr) once it stopped: at SIGTERM after
    its listening line, or on its own when it refuses to start."""
    proc = subprocess.Popen([a.kvstream, "serve", "--model", model, "--port", "0", "--state-dir",
                             os.path.join(tmp, "state"), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.stdout.readline():
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_chat_template(a, tmp):
    """`kvstream serve` reads the GGUF's tokenizer.chat_template: a known family is used, an
    unknown one stops it with an error naming the template, --chat-template overrides both, and
    a model without one gets chatml."""
    gemma = ("{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\\n' + message['content'] | trim "
             "+ '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")
    known = os.path.join(tmp, "gemma.gguf")
    gguf_with_chat_template(a.gguf, known, gemma)
    code, err = serve_startup(a, known, tmp)
    check(code == 0 and "chat template gemma (the model's tokenizer.chat_template)" in err, f"gemma: {code} {err}")
    # The copy is still the same model.
    gen = ["generate", "-n", "30", "--temperature", "0", "-q"]
    check(run([a.kvstream, *gen, "--model", known]).stdout == run([a.kvstream, *gen, "--model", a.gguf]).stdout,
          "the model with a chat template added generates other text")
    unknown = os.path.join(tmp, "unknown.gguf")
    gguf_with_chat_template(a.gguf, unknown, "{{ messages | alpaca }}")
    code, err = serve_startup(a, unknown, tmp)
    check(code == 1 and '"{{ messages | alpaca }}"' in err and "--chat-template NAME" in err
          and unknown in err, f"unknown template: {code} {err}")
    code, err = serve_startup(a, unknown, tmp, "--chat-template", "zephyr")
    check(code == 0 and "chat template zephyr (--chat-template)" in err, f"--chat-template: {code} {err}")
    code, err = serve_startup(a, a.gguf, tmp)
    check(code == 0 and "chat template chatml (default: the model has no chat template)" in err, f"default: {err}")


def test_bench(a, tmp):
    """`kvstream bench` on tiny depths: valid JSON with every field and positive rates; --threads
    validated with one clear line; greedy text the same with 1 and 2 threads."""
    model = ["--model", a.model, "--tokenizer", a.tokenizer]
    bench = ["bench", *model, "--depths", "0,64", "--steps", "4", "--prompt-tokens", "16", "--triad-mib", "8",
             "--budget", "32"]
    j = json.loads(run([a.kvstream, *bench, "--threads", "2", "--json"]).stdout)
    for key in ("model", "policy", "budget", "kv_dtype", "threads", "weights", "load_average", "weight_bytes", "triad_gbps",
                "prefill", "decode_steps", "fill", "depths", "total_seconds"):
        check(key in j, f"bench --json lacks {key}: {j}")
    check(j["threads"] == 2 and j["kv_dtype"] == "f16" and j["policy"] == "sinks", f"options: {j}")
    check(j["weight_bytes"] > 0 and j["triad_gbps"] > 0, f"weight_bytes / triad: {j}")
    check(j["prefill"]["tokens"] == 16 and j["prefill"]["tokens_per_second"] > 0, f"prefill: {j['prefill']}")
    check([d["requested_depth"] for d in j["depths"]] == [0, 64], f"depths: {j['depths']}")
    for d in j["depths"]:
        check(d["reached"] and d["depth"] == d["requested_depth"], f"depth {d}")
        for key in ("tokens_per_second", "gbps", "triad_ratio", "kv_bytes", "seconds"):
            check(d[key] > 0, f"{key} not positive in {d}")
        check(d["bytes_per_token"] == j["weight_bytes"] + d["kv_bytes"], f"bytes_per_token of {d}")
        check(math.isclose(d["gbps"], d["bytes_per_token"] * d["tokens_per_second"] / 1e9, rel_tol=1e-9),
              f"gbps of {d}")
    check(j["depths"][1]["tokens_kept"] == 32, f"kept at depth 64 under budget 32: {j['depths'][1]}")
    p = run([a.kvstream, *bench, "--threads", "1", "--fill-prefill", "--policy", "full"])
    check("tok/s" in p.stdout and "of triad" in p.stdout and "prefill 16 tokens" in p.stdout,
          f"human table: {p.stdout}")

    for bad in ("0", "-1", "two"):
        p = run([a.kvstream, "bench", *model, "--threads", bad], expect=2)
        check(p.stderr.count("\n") == 1 and "--threads" in p.stderr and "at least 1" in p.stderr,
              f"--threads {bad}: {p.stderr!r}")
    p = run([a.kvstream, "sweep", *model, "--text", a.text, "--max-tokens", "50", "--policies", "sinks",
             "--budgets", "16", "--jobs", "2", "--threads", "1", "--no-plot", "--out", os.path.join(tmp, "s")],
            expect=1)
    check("--jobs 2 exceeds --threads 1" in p.stderr, f"sweep jobs > threads: {p.stderr!r}")

    gen = ["generate", *model, "-n", "80", "--temperature", "0", "-q"]
    one = run([a.kvstream, *gen, "--threads", "1"]).stdout
    two = run([a.kvstream, *gen, "--threads", "2"]).stdout
    check(one == two and len(one) > 100, f"greedy text differs between 1 and 2 threads:\n{one!r}\n{two!r}")


def test_compare(a, tmp):
    """Per-token scores from `ppl --nll-out` and `sweep --per-token` agree with each other and with the
    reported perplexity; `compare` of a run with itself is exactly 0; mismatched files are refused."""
    model = ["--model", a.model, "--tokenizer", a.tokenizer]
    n = "300"
    files = {}
    for name, flags in (("sinks", ["--policy", "sinks", "--budget", "48"]),
                        ("window", ["--policy", "window", "--budget", "48"])):
        files[name] = os.path.join(tmp, f"{name}.csv")
        j = json.loads(run([a.kvstream, "ppl", *model, "--text", a.text, "--max-tokens", n, *flags,
                            "--nll-out", files[name], "--json"]).stdout)
        with open(files[name], newline="") as f:
            rows = list(csv.DictReader(f))
        check(len(rows) == int(n) - 1 and j["nll_out"] == files[name], f"{name}: {len(rows)} rows")
        check([int(r["position"]) for r in rows] == list(range(1, int(n))), "positions do not run 1..n-1")
        mean = math.fsum(float(r["nll"]) for r in rows) / len(rows)
        check(math.isclose(mean, j["nll_mean"], rel_tol=1e-12), f"{name}: mean nll {mean} != {j['nll_mean']}")

    out = os.path.join(tmp, "sweep")
    sw = run([a.kvstream, "sweep", *model, "--text", a.text, "--max-tokens", n, "--policies", "sinks",
              "--budgets", "48", "--per-token", "--no-plot", "--out", out])
    with open(os.path.join(out, "sweep.json")) as f:
        point = json.load(f)["points"][0]
    check(point["nll_file"] == "nll/sinks-b48-f32.csv", f"nll_file {point.get('nll_file')}: {sw.stdout}")
    with open(os.path.join(out, point["nll_file"]), "rb") as f, open(files["sinks"], "rb") as g:
        check(f.read() == g.read(), "sweep --per-token and ppl --nll-out differ for the same flags")

    same = json.loads(run([a.kvstream, "compare", files["sinks"], os.path.join(out, point["nll_file"]),
                           "--json"]).stdout)
    check(same["log_ratio"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0 and
          same["verdict"] == "not distinguishable", f"self-comparison: {same}")
    j = json.loads(run([a.kvstream, "compare", files["sinks"], files["window"], "--json", "--resamples", "500",
                        "--block", "32"]).stdout)
    check(j["tokens"] == int(n) - 1 and j["block"] == 32 and j["resamples"] == 500, f"options: {j}")
    check(math.isclose(j["ratio"], j["ppl_b"] / j["ppl_a"], rel_tol=1e-9), f"ratio: {j}")
    check(j["ci_low"] <= j["log_ratio"] <= j["ci_high"], f"interval does not contain the estimate: {j}")
    p = run([a.kvstream, "compare", files["sinks"], files["window"]])
    check("B/A" in p.stdout and "interval" in p.stdout and "block bootstrap" in p.stdout, f"human: {p.stdout}")

    short = os.path.join(tmp, "short.csv")
    run([a.kvstream, "ppl", *model, "--text", a.text, "--max-tokens", "100", "--policy", "sinks", "--budget",
         "48", "--nll-out", short])
    p = run([a.kvstream, "compare", files["sinks"], short], expect=1)
    check(p.stderr.count("\n") == 1 and "same tokens" in p.stderr, f"length mismatch: {p.stderr!r}")
    bad = os.path.join(tmp, "bad.csv")
    with open(bad, "w") as f:
        f.write("position,token,nll\n1,5,0.5\n3,6,0.5\n")
    p = run([a.kvstream, "compare", files["sinks"], bad], expect=1)
    check(p.stderr.count("\n") == 1 and f"{bad}:3: position 3 where 2" in p.stderr, f"bad file: {p.stderr!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("test", choices=("sweep", "inspect", "gguf", "chat_template", "bench", "compare"))
    ap.add_argument("--kvstream", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--gguf", help="the model as a GGUF file (tests gguf, chat_template)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"kvstream-{a.test}-") as tmp:
        {"sweep": test_sweep, "inspect": test_inspect, "gguf": test_gguf, "chat_template": test_chat_template,
         "bench": test_bench, "compare": test_compare}[a.test](a, tmp)
    print(f"PASS: kvstream {a.test}")


if __name__ == "__main__":
    main()
