# Independent re-implementation of the chain encoding (see the package doc),
# used to derive the golden values in digest_test.go: python3 reference.py
import hashlib, struct
def s(h, x):
    b = x.encode() if isinstance(x, str) else x
    h.update(struct.pack('>Q', len(b))); h.update(b)
def i(h, v): h.update(struct.pack('>q', v))
def bo(h, v): h.update(b'\x01' if v else b'\x00')
def f(h, v): h.update(struct.pack('>d', 0.0 if v == 0 else v))
def of(h, v):
    bo(h, v is not None)
    if v is not None: f(h, v)
def oi(h, v):
    bo(h, v is not None)
    if v is not None: i(h, v)
def hx(tag, *parts):
    h = hashlib.sha256(); s(h, tag)
    for p in parts: s(h, p)
    return h.hexdigest()
text = hx("llmtap-text-v1", "hi", "hello", "", "")
body = hx("llmtap-body-v1", "{}", "")
h = hashlib.sha256(); s(h, "llmtap-row-v1")
eid = bytes(range(1, 17)); h.update(eid)
i(h, 1772366400123456)
for x in ["proxy", "team-ä'\"x", "k1", "sk-llmt", "10.0.0.1", "POST", "/v1/chat/completions", "r1", "chat", "m"]: s(h, x)
i(h, 200); bo(h, True); f(h, 0.1+0.2); of(h, 5.5); of(h, None); oi(h, 10); oi(h, 0); oi(h, None)
for x in ["response", "stop", "", '{"a":"b"}', "{}"]: s(h, x)
bo(h, False); s(h, text); s(h, body)
row = h.digest(); print("row", row.hex())
h = hashlib.sha256(); s(h, "llmtap-rows-v1"); h.update(struct.pack('>Q', 1)); h.update(eid); h.update(row); rows = h.digest()
h = hashlib.sha256(); s(h, "llmtap-link-v1"); s(h, "ab"); i(h, 7); s(h, "batch"); i(h, 42); i(h, 1); i(h, 1772366400123456); i(h, 1772366400123456); i(h, 1772366401); s(h, ""); h.update(rows)
print("link", h.hexdigest())
