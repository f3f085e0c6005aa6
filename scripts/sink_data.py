"""Training windows for the sink-model recipe: packed documents and the synthetic tasks that give
some heads a job on rare inputs only (so that they are dormant, and park on BOS, everywhere else).

Everything is in token space (tok512 ids). A window is `seq_len + 1` tokens: position 0 holds BOS
and documents follow one another, each opened by BOS, the last one cut at the window's end (as
pre-training packs them; attention crosses document boundaries).

Document kinds (weights from --mix, e.g. "story:0.5,lag:0.5"):
  story   a story from the corpus, as written.
  repeat  BOS + C + C, C a span of a story of random length (the copy's lag changes per document).
  lag     a story with markers inserted: marker k (a byte token that text never produces) is followed
          by a copy of the token LAGS[k] positions before the marker. Only a head that looks back a
          fixed distance from a marker can predict it, and nothing in plain text needs that head.
  recall  a story with trigger/value pairs: trigger k, a random value token; later trigger k again
          predicts the same value (possibly hundreds of tokens back).
  bigram  Guo et al.'s Bigram-Backcopy: tokens from a bigram chain fitted on the corpus (context
          beyond the current token is useless), and after a trigger token the token before it.
"""
import random

BOS = 1
NEWLINE = 13  # <0x0A>; stories are separated by a blank line
# Byte-fallback tokens of control bytes: tok512's text encoding never emits them.
LAG_MARKERS = [4, 5, 6, 7]  # <0x01> .. <0x04>
LAGS = [3, 9, 27, 81]
RECALL_TRIGGERS = [8, 9, 10, 11]  # <0x05> .. <0x08>
BIGRAM_TRIGGERS = [14, 15]  # <0x0B> <0x0C>
FIXLAG = 127


def split_stories(tokens):
    """Token list (BOS-opened files) -> list of stories (token lists without BOS), cut at blank lines."""
    stories, cur, prev = [], [], None
    for t in tokens:
        if t == BOS:
            if cur:
                stories.append(cur)
            cur, prev = [], None
            continue
        if t == NEWLINE and prev == NEWLINE:
            cur.pop()
            if len(cur) >= 8:
                stories.append(cur)
            cur, prev = [], None
            continue
        cur.append(t)
        prev = t
    if len(cur) >= 8:
        stories.append(cur)
    return stories


class Mixer:
    def __init__(self, stories, mix, seq_len, seed, lag_rate=0.04, recall_pairs=6, fixlag=FIXLAG,
                 fixcopy_prefix=0, fixcopy_decoy=0.0):
        self.fixcopy_decoy = fixcopy_decoy
        self.fixlag = fixlag
        self.fixcopy_prefix = fixcopy_prefix
        self.stories = stories
        self.kinds = [k for k, _ in mix]
        self.weights = [w for _, w in mix]
        self.seq_len = seq_len
        self.rng = random.Random(seed)
        self.lag_rate = lag_rate
        self.recall_pairs = recall_pairs
        self.vocab_words = sorted({t for s in stories[:2000] for t in s if t > 258})
        if "bigram" in self.kinds:
            self._fit_bigram()

    def _fit_bigram(self):
        nxt = {}
        for s in self.stories[:20000]:
            for a, b in zip(s, s[1:]):
                nxt.setdefault(a, []).append(b)
        self.bigram = nxt
        self.bigram_starts = [s[0] for s in self.stories[:20000]]

    def story(self):
        return list(self.rng.choice(self.stories))

    def doc(self, kind, room):
        r = self.rng
        if kind == "story":
            # One to three stories in a row, as one document: blank lines between them, as in the
            # evaluation texts (a whole file read as one document).
            out = self.story()
            for _ in range(r.choice([0, 0, 1, 2])):
                out += [NEWLINE, NEWLINE] + self.story()
            return out
        if kind == "repeat":
            s = self.story()
            n = r.randint(8, max(8, min(len(s), (room - 1) // 2)))
            c = s[:n]
            return c + c
        if kind == "lag":
            s, out = self.story(), []
            for t in s:
                out.append(t)
                if len(out) > max(LAGS) and r.random() < self.lag_rate:
                    k = r.randrange(len(LAGS))
                    out.append(LAG_MARKERS[k])
                    out.append(out[-1 - LAGS[k]])
            return out
        if kind == "recall":
            s = self.story()
            out, live = [], {}
            slots = sorted(r.sample(range(len(s)), min(len(s), 2 * self.recall_pairs)))
            slots = set(slots)
            for i, t in enumerate(s):
                out.append(t)
                if i in slots:
                    k = r.randrange(len(RECALL_TRIGGERS))
                    if k in live and r.random() < 0.7:
                        out += [RECALL_TRIGGERS[k], live[k]]
                    else:
                        live[k] = r.choice(self.vocab_words)
                        out += [RECALL_TRIGGERS[k], live[k]]
            return out
        if kind == "bigram":
            n = r.randint(64, max(64, room))
            out = [r.choice(self.bigram_starts)]
            while len(out) < n:
                if len(out) >= 2 and r.random() < 0.05:
                    out += [r.choice(BIGRAM_TRIGGERS), out[-1]]
                    continue
                cand = self.bigram.get(out[-1])
                out.append(r.choice(cand) if cand else r.choice(self.bigram_starts))
            return out
        if kind == "fixcopy":
            # BOS + P + C + C with |C| = fixlag: the copy always comes from exactly fixlag back. With
            # fixcopy_prefix, P is a random-length start of a story (0 .. fixcopy_prefix tokens), so
            # that the distance from BOS does not tell where the copy starts: only a content match
            # fixlag back does.
            s = self.story()
            n_prefix = r.randint(0, self.fixcopy_prefix) if self.fixcopy_prefix else 0
            while len(s) < self.fixlag + n_prefix:
                s += [NEWLINE, NEWLINE] + self.story()
            o = r.randrange(n_prefix, len(s) - self.fixlag + 1)
            c = s[o : o + self.fixlag]
            if r.random() < self.fixcopy_decoy:
                # A decoy: the second half starts as C does (as stories start alike: "Once upon a
                # time, there was") and then goes its own way, so the copy head must keep checking
                # its match instead of trusting the first few tokens.
                k = r.randint(2, 16)
                other = self.story()
                return s[:n_prefix] + c + c[:k] + other[: self.fixlag - k]
            return s[:n_prefix] + c + c
        if kind == "norep":
            # Distinct tokens (drawn without replacement), so that every token already in the
            # context is the one thing that will not come next: a head that copies from the
            # context, or averages it, is wrong everywhere but after a trigger, where the next
            # token is the one before the trigger.
            n = r.randint(64, max(64, min(room, len(self.vocab_words) - 8)))
            pool = r.sample(self.vocab_words, n)
            out = [pool.pop()]
            while len(out) < n and pool:
                if len(out) >= 2 and r.random() < 0.05:
                    out += [r.choice(BIGRAM_TRIGGERS), out[-1]]
                    continue
                out.append(pool.pop())
            return out
        raise ValueError(f"unknown document kind {kind!r}")

    def window(self):
        """seq_len + 1 tokens: BOS at 0, documents packed after it, each opened by BOS."""
        out = [BOS]
        first = True
        if "fixcopy" in self.kinds:  # a window of its own, opened by its BOS, so the lag is fixed
            if self.rng.choices(self.kinds, self.weights)[0] == "fixcopy":
                out += self.doc("fixcopy", self.seq_len)
                first = False
                if len(out) >= self.seq_len + 1:
                    return out[: self.seq_len + 1]
        while len(out) < self.seq_len + 1:
            if not first:
                out.append(BOS)
            first = False
            kind = self.rng.choices(self.kinds, self.weights)[0]
            while kind == "fixcopy":
                kind = self.rng.choices(self.kinds, self.weights)[0]
            out += self.doc(kind, self.seq_len + 1 - len(out))
        return out[: self.seq_len + 1]


def parse_mix(text):
    mix = []
    for part in text.split(","):
        name, _, w = part.partition(":")
        mix.append((name.strip(), float(w or 1)))
    return mix
