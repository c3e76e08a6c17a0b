#!/usr/bin/env python3
"""Generates corpus.tsv: labelled lines for tests/unit/test_pii.c.

Each line is "LABELS<TAB>TEXT". LABELS is "-" (nothing to find) or
"type=value" items joined by " | ". Deterministic (fixed seed); the output is
committed, rerun only to extend it. Hand-written lines live in handwritten.tsv
and are appended as they are."""
import random, os

rnd = random.Random(6)
here = os.path.dirname(os.path.abspath(__file__))

def luhn_complete(prefix, length):
    digits = [int(c) for c in prefix]
    while len(digits) < length - 1:
        digits.append(rnd.randrange(10))
    for check in range(10):
        d = digits + [check]
        s = 0
        for i, v in enumerate(reversed(d)):
            if i % 2:
                v *= 2
                if v > 9: v -= 9
            s += v
        if s % 10 == 0:
            return ''.join(map(str, d))

def luhn_break(num):
    last = int(num[-1])
    return num[:-1] + str((last + 1 + rnd.randrange(8)) % 10)

def group(num, sizes, sep):
    out, k = [], 0
    for g in sizes:
        out.append(num[k:k+g]); k += g
    if k < len(num): out.append(num[k:])
    return sep.join(out)

def iban(cc, bban):
    rearr = bban + cc + '00'
    n = int(''.join(str(int(c, 36)) for c in rearr))
    check = 98 - n % 97
    return f"{cc}{check:02d}{bban}"

def rand_bban(fmt):
    out = ''
    for f in fmt:
        out += rnd.choice('ABCDEFGHIJKLMNOPQRSTUVWXYZ') if f == 'A' else str(rnd.randrange(10))
    return out

first = ["alice", "bob", "carol", "dmitri", "eve", "fatima", "gus", "hana", "ivan", "jules",
         "kofi", "lena", "maria", "nils", "olga", "pierre", "quinn", "rosa", "sven", "tomas"]
last = ["smith", "nguyen", "garcia", "muller", "rossi", "kowalski", "tanaka", "okafor", "dubois"]
domains = ["example.com", "mail.example.org", "corp.example.co.uk", "uni-example.edu",
           "example.io", "sub.domain.example.net"]
lines = []

def add(labels, text):
    lab = " | ".join(f"{t}={v}" for t, v in labels) if labels else "-"
    lines.append(f"{lab}\t{text}")

# e-mail
em_t = ["Contact {} for details.", "Send the report to <{}> by Friday.", "email: {}",
        "cc {}, thanks", "Reach me at {}!", "mailto:{}", "({}) wrote the draft",
        "\"from\": \"{}\""]
for k in range(40):
    f, l, d = rnd.choice(first), rnd.choice(last), rnd.choice(domains)
    local = rnd.choice([f"{f}.{l}", f"{f}{rnd.randrange(100)}", f"{f}+news", f"{f[0]}_{l}",
                        f"{f}-{l}", f"{l}.{f}%ops"])
    e = f"{local}@{d}"
    add([("email", e)], rnd.choice(em_t).format(e))

# phone
ph = []
for k in range(12):
    a, b, c = rnd.randrange(201, 989), rnd.randrange(200, 999), rnd.randrange(0, 10000)
    ph += [f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1 {a} {b} {c:04d}",
           f"+1-{a}-{b}-{c:04d}"]
for k in range(8):
    ph += [f"+44 20 {rnd.randrange(7000,8000)} {rnd.randrange(1000,10000)}",
           f"020 {rnd.randrange(7000,8000)} {rnd.randrange(1000,10000)}",
           f"+33 6 {rnd.randrange(10,99)} {rnd.randrange(10,99)} {rnd.randrange(10,99)} {rnd.randrange(10,99)}",
           f"06 {rnd.randrange(10,99)} {rnd.randrange(10,99)} {rnd.randrange(10,99)} {rnd.randrange(10,99)}",
           f"+49 30 {rnd.randrange(1000000,9999999)}",
           f"+4915{rnd.randrange(100000000,999999999)}",
           f"0171 {rnd.randrange(1000000,9999999)}"]
ph_t = ["Call me on {} tomorrow.", "phone: {}", "Tel. {}", "My number is {}, text first.",
        "reach the desk at {} (ext 4)", "Mobile {}"]
rnd.shuffle(ph)
for p in ph[:70]:
    add([("phone", p)], rnd.choice(ph_t).format(p))

# SSN
for k in range(30):
    a = rnd.choice([rnd.randrange(1, 666), rnd.randrange(667, 900)])
    g, s = rnd.randrange(1, 100), rnd.randrange(1, 10000)
    fmt = k % 3
    v = f"{a:03d}-{g:02d}-{s:04d}" if fmt == 0 else (f"{a:03d} {g:02d} {s:04d}" if fmt == 1 else f"{a:03d}{g:02d}{s:04d}")
    t = rnd.choice(["SSN: {}", "Her social security number is {}.", "ssn {} on file",
                    "SSN#: {}"]) if fmt else rnd.choice(["id {} verified", "SSN {}", "number {} (US)"])
    add([("ssn", v)], t.format(v))

# cards
brands = [("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("37", 15), ("34", 15),
          ("6011", 16), ("65", 16), ("35", 16), ("36", 14)]
for k in range(40):
    pre, n = brands[k % len(brands)]
    num = luhn_complete(pre, n)
    style = k % 3
    if style == 0: v = num
    elif n == 15: v = group(num, [4, 6, 5], " " if k % 2 else "-")
    else: v = group(num, [4, 4, 4, 4], " " if style == 1 else "-")
    add([("card", v)], rnd.choice(["Card {} exp 09/27", "charge {} please", "cc: {}",
                                   "Paid with {}.", "card number {}"]).format(v))

# IPv4 / IPv6
for k in range(25):
    v = ".".join(str(rnd.randrange(0, 256)) for _ in range(4))
    add([("ipv4", v)], rnd.choice(["login from {} failed", "client={}", "ping {}",
                                   "Server at {}:8080 is down", "[{}]"]).format(v))
v6 = ["2001:db8::1", "fe80::1ff:fe23:4567:890a", "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
      "::1", "2001:db8:0:0:1:0:0:1", "::ffff:192.0.2.128", "2606:4700:4700::1111",
      "fd12:3456:789a:1::1", "2a00:1450:4007:80e::200e", "FE80::0202:B3FF:FE1E:8329",
      "2001:db8:a::123", "::ffff:10.0.0.1", "2001:DB8:0:56::1", "fe80::a00:27ff:fe4e:66a1",
      "2001:470:1f0b:1::2", "64:ff9b::192.0.2.33", "2400:cb00:2048:1::c629:d7a2",
      "2001:db8:3333:4444:5555:6666:7777:8888", "2001:db8::8a2e:370:7334", "fc00::42"]
for v in v6:
    add([("ipv6", v)], rnd.choice(["peer {} connected", "addr={}", "from [{}]:443",
                                   "IPv6 {} blocked", "route via {}"]).format(v))

# IBAN
fmts = [("DE", "NNNNNNNNNNNNNNNNNN"), ("GB", "AAAANNNNNNNNNNNNNN"), ("FR", "NNNNNNNNNNNNNNNNNNNNNNN"),
        ("NL", "AAAANNNNNNNNNN"), ("ES", "NNNNNNNNNNNNNNNNNNNN"), ("IT", "ANNNNNNNNNNNNNNNNNNNNNN"),
        ("BE", "NNNNNNNNNNNN"), ("CH", "NNNNNNNNNNNNNNNNN"), ("PL", "NNNNNNNNNNNNNNNNNNNNNNNN")]
for k in range(36):
    cc, f = fmts[k % len(fmts)]
    v = iban(cc, rand_bban(f))
    if k % 2:
        v = " ".join(v[i:i+4] for i in range(0, len(v), 4))
    add([("iban", v)], rnd.choice(["IBAN {}", "Transfer to {} today.", "account: {}",
                                   "please pay into {} (ref 77)"]).format(v))

# dates of birth
mon = ["January", "February", "March", "April", "May", "June", "July", "August",
       "September", "October", "November", "December"]
for k in range(40):
    y, m, d = rnd.randrange(1935, 2008), rnd.randrange(1, 13), rnd.randrange(1, 29)
    v = [f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{m}/{d}/{y}", f"{d:02d}.{m:02d}.{y}",
         f"{mon[m-1]} {d}, {y}", f"{d} {mon[m-1]} {y}", f"{mon[m-1][:3]} {d} {y}",
         f"{d:02d}-{m:02d}-{y}"][k % 8]
    add([("dob", v)], rnd.choice(["DOB: {}", "born {}", "Date of birth {}",
                                  "patient (dob {}) admitted", "Birthday: {}",
                                  "she was born on {} in Lyon"]).format(v))

# lines with several types
for k in range(20):
    e = f"{rnd.choice(first)}@{rnd.choice(domains)}"
    a = rnd.randrange(201, 989)
    p = f"({a}) 555-{rnd.randrange(0,10000):04d}"
    ip = f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1,255)}"
    add([("email", e), ("phone", p), ("ipv4", ip)],
        f"User {e} called from {p}; session ip {ip}.")

# hard negatives
neg = []
for k in range(20):
    neg.append(f"Upgraded to version {rnd.randrange(1,20)}.{rnd.randrange(0,30)}.{rnd.randrange(0,200)}")
    neg.append(f"Order ORD-{rnd.randrange(2015,2026)}-{rnd.randrange(0,999999):06d} shipped")
    neg.append(f"2024-{rnd.randrange(1,13):02d}-{rnd.randrange(1,29):02d}T{rnd.randrange(24):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}Z job finished")
    neg.append(f"log at 2023-{rnd.randrange(1,13):02d}-{rnd.randrange(1,29):02d} {rnd.randrange(24):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d} ok")
    pre, n = brands[k % len(brands)]
    neg.append(f"Card {group(luhn_break(luhn_complete(pre, n)), [4,4,4,4], ' ')} was declined (typo)")
    cc, f = fmts[k % len(fmts)]
    good = iban(cc, rand_bban(f))
    bad = good[:2] + f"{(int(good[2:4]) + 1 + rnd.randrange(90)) % 97 + 2:02d}" + good[4:]
    if bad != good:
        neg.append(f"IBAN {bad} rejected by the bank")
    neg.append(f"Invoice #{rnd.randrange(10**9, 10**10)} total {rnd.randrange(1,9999)}.{rnd.randrange(100):02d} EUR")
    neg.append(f"took {rnd.randrange(24):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d} to run, build {rnd.randrange(1000,99999)}")
    neg.append(f"uuid {'%08x' % rnd.getrandbits(32)}-{'%04x' % rnd.getrandbits(16)}-4{'%03x' % rnd.getrandbits(12)}-a{'%03x' % rnd.getrandbits(12)}-{'%012x' % rnd.getrandbits(48)}")
    neg.append(f"MAC 00:1a:{rnd.randrange(256):02x}:{rnd.randrange(256):02x}:{rnd.randrange(256):02x}:{rnd.randrange(256):02x} on port {rnd.randrange(1,48)}")
    neg.append(f"ISBN 978-{rnd.randrange(0,10)}-{rnd.randrange(10,99)}-{rnd.randrange(100000,999999)}-{rnd.randrange(10)} in stock")
    neg.append(f"sha {'%040x' % rnd.getrandbits(160)} pushed")
    neg.append(f"between {rnd.randrange(1,50)}-{rnd.randrange(50,100)} items, {rnd.randrange(1,100)}% off")
    neg.append(f"release on 2027-{rnd.randrange(1,13):02d}-{rnd.randrange(1,29):02d}, see ticket JIRA-{rnd.randrange(100,9999)}")
    neg.append(f"user@ mentioned in {rnd.choice(['the chat', 'a comment'])} and @{rnd.choice(first)} replied")
for v in neg:
    add([], v)

with open(os.path.join(here, "handwritten.tsv")) as f:
    hand = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
with open(os.path.join(here, "corpus.tsv"), "w") as f:
    f.write("\n".join(lines + hand) + "\n")
print(len(lines) + len(hand), "lines")
