#!/usr/bin/env python3
"""End-to-end test of `kvstream serve` (registered with CTest; stdlib only, loopback only).

Usage: serve_test.py --kvstream BIN --model M --tokenizer T

1. A streamed completion equals what `kvstream generate` prints for the same prompt, seed and
   sampling (the same binary, the same model).
2. SIGTERM parks every session and exits 0; a server started again on the same --state-dir
   resumes the session, and its next turn equals the same two turns run without a restart.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


class Server:
    """kvstream serve on 127.0.0.1 and a port the kernel picks (read from its JSON startup line)."""

    def __init__(self, args, state_dir):
        self.proc = subprocess.Popen(
            [args.kvstream, "serve", "--model", args.model, "--tokenizer", args.tokenizer, "--host", "127.0.0.1",
             "--port", "0", "--budget", "64", "--pool-mib", "4", "--state-dir", state_dir],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            fail(f"serve did not start: {self.proc.stderr.read()}")
        event = json.loads(line)
        check(event["event"] == "listening" and event["host"] == "127.0.0.1", f"startup line {line!r}")
        self.base = f"http://127.0.0.1:{event['port']}"

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def complete(self, body):
        status, text = self.request("POST", "/v1/completions", body)
        check(status == 200, f"completion {body} -> {status} {text}")
        return json.loads(text)["choices"][0]["text"]

    def stream(self, body):
        """Text of a streamed completion, read event by event as server-sent events."""
        body = dict(body, stream=True)
        req = urllib.request.Request(self.base + "/v1/completions", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        text, done, events = "", False, 0
        with urllib.request.urlopen(req, timeout=60) as r:
            check(r.headers.get_content_type() == "text/event-stream", "content type")
            for raw in r:
                line = raw.decode().rstrip("\n")
                if not line.startswith("data: "):
                    continue
                events += 1
                if line == "data: [DONE]":
                    done = True
                    break
                text += json.loads(line[6:])["choices"][0]["text"]
        check(done and events > 2, f"stream ended without [DONE] after {events} events")
        return text

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        check(self.proc.returncode == 0, f"serve exited {self.proc.returncode} after SIGTERM:\n{err}")
        return err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kvstream", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", required=True)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as state:
        # 1. Equal to kvstream generate.
        prompt = "Once upon a time"
        gen = subprocess.run([args.kvstream, "generate", "--model", args.model, "--tokenizer", args.tokenizer,
                              "--budget", "64", "--prompt", prompt, "-n", "80", "--seed", "7", "--temperature",
                              "0.9", "--top-p", "0.9", "-q"], capture_output=True, text=True, check=True).stdout
        check(gen.startswith(prompt) and gen.endswith("\n"), f"generate printed {gen!r}")
        want = gen[len(prompt):-1]
        server = Server(args, state)
        got = server.stream({"prompt": prompt, "max_tokens": 80, "seed": 7, "temperature": 0.9, "top_p": 0.9})
        check(got == want, f"serve streamed {got!r}\ngenerate printed {want!r}")
        print(f"ok: streamed completion equals kvstream generate ({len(want)} chars)")

        # 2. SIGTERM, restart, resume.
        status, text = server.request("POST", "/v1/sessions", {})
        check(status == 201, f"create session -> {status}")
        sid = json.loads(text)["id"]
        turn1 = {"prompt": "Tim had a dog.", "max_tokens": 30, "seed": 3, "session": sid}
        turn2 = {"prompt": " The dog", "max_tokens": 30, "session": sid}
        first = server.complete(turn1)
        err = server.terminate()
        check("SIGTERM" in err and "1 sessions parked" in err, f"shutdown log:\n{err}")
        check(os.path.exists(os.path.join(state, sid + ".session")), "no record in the state dir")

        server = Server(args, state)
        status, text = server.request("GET", f"/v1/sessions/{sid}")
        check(status == 200 and json.loads(text)["state"] == "parked", f"after restart: {status} {text}")
        resumed = server.complete(turn2)
        # The same two turns on a new session, without a restart in between.
        status, text = server.request("POST", "/v1/sessions", {})
        other = json.loads(text)["id"]
        check(server.complete(dict(turn1, session=other)) == first, "turn 1 is not reproducible")
        check(server.complete(dict(turn2, session=other)) == resumed,
              "the resumed session differs from an uninterrupted one")
        status, metrics = server.request("GET", "/metrics")
        check(status == 200 and "kvstream_restores_total 1" in metrics, f"metrics:\n{metrics}")
        server.terminate()
        print("ok: SIGTERM parks, restart resumes the session exactly")


if __name__ == "__main__":
    main()
