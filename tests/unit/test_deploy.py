#!/usr/bin/env python3
"""test_deploy.py - validates deploy/ without a cluster: Kubernetes manifests (structure,
selectors, probes, secrets as files referenced by *_file keys), the ConfigMap's gantry.json
through `gantry config check`, compose, systemd units, Prometheus alert rules and the Grafana
dashboard against the metrics the code exposes, and the Dockerfile (built when a Docker engine
is present unless GANTRY_DOCKER_BUILD=0, else linted). Prints one line per check; exit 1 on any
failure."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

SRC = os.environ.get("GANTRY_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("GANTRY_BUILD_DIR", os.path.join(SRC, "build"))
DEPLOY = os.path.join(SRC, "deploy")
GANTRY = os.path.join(BUILD, "tools", "gantry")

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("  FAIL " + what)
    return cond


def load_k8s():
    docs = []
    for path in sorted(glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml"))):
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d is not None:
                    docs.append((os.path.basename(path), d))
    return docs


def pod_specs(docs):
    """(file, doc, pod template) of every Deployment and Job."""
    for fn, d in docs:
        if d.get("kind") in ("Deployment", "Job"):
            yield fn, d, d.get("spec", {}).get("template", {})


def subset(small, big):
    return bool(small) and all(big.get(k) == v for k, v in small.items())


# ---- Kubernetes -------------------------------------------------------------

def test_k8s_structure(docs):
    check(len(docs) > 0, "deploy/k8s holds manifests")
    for fn, d in docs:
        kind = d.get("kind")
        where = "%s: %s" % (fn, kind)
        check(isinstance(d.get("apiVersion"), str) and d["apiVersion"], where + " has apiVersion")
        check(isinstance(kind, str) and kind, fn + ": document has kind")
        if kind == "Kustomization":
            continue
        name = d.get("metadata", {}).get("name")
        check(isinstance(name, str) and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name or ""),
              where + " has a valid metadata.name")
        if kind != "Namespace":
            check(d["metadata"].get("namespace") == "gantry", "%s/%s is in namespace gantry" % (kind, name))
    kinds = {d["kind"] for _, d in docs}
    for k in ("Namespace", "ConfigMap", "Secret", "Deployment", "Job", "Service",
              "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        check(k in kinds, "deploy/k8s has a " + k)


def test_k8s_workloads(docs):
    deployments = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Deployment"}
    roles = set()
    for name, d in deployments.items():
        spec = d["spec"]
        tmpl_labels = spec["template"]["metadata"].get("labels", {})
        check(subset(spec.get("selector", {}).get("matchLabels", {}), tmpl_labels),
              "Deployment %s: selector matches its template labels" % name)
        pod = spec["template"]["spec"]
        sc = pod.get("securityContext", {})
        check(sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0,
              "Deployment %s runs as non-root" % name)
        check(pod.get("terminationGracePeriodSeconds", 30) >= 30,
              "Deployment %s leaves time to drain" % name)
        for c in pod["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            numbers = set(ports.values())
            for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
                g = c.get(probe, {}).get("httpGet", {})
                port = g.get("port")
                declared = port in ports or port in numbers
                check(g.get("path") == path and declared,
                      "Deployment %s: %s is GET %s on a declared port" % (name, probe, path))
            csc = c.get("securityContext", {})
            check(csc.get("allowPrivilegeEscalation") is False,
                  "Deployment %s: no privilege escalation" % name)
            args = c.get("args", []) + c.get("command", [])
            if "--roles" in args:
                roles.update(args[args.index("--roles") + 1].split(","))
            check("--config" in args, "Deployment %s passes --config" % name)
    check({"intake", "coordinator", "ledger", "reaper"} <= roles,
          "Deployments cover the intake, coordinator, ledger and reaper roles (have %s)" % sorted(roles))
    check(any("worker" in n for n in deployments), "a worker Deployment exists")

    jobs = [d for _, d in docs if d["kind"] == "Job"]
    check(any("migrate" in c.get("args", []) + c.get("command", [])
              for j in jobs for c in j["spec"]["template"]["spec"]["containers"]),
          "a Job runs gantry migrate")

    for _, d in docs:
        kind, name = d["kind"], d.get("metadata", {}).get("name")
        if kind == "Service":
            sel = d["spec"].get("selector", {})
            targets = [dep for dep in deployments.values()
                       if subset(sel, dep["spec"]["template"]["metadata"]["labels"])]
            check(len(targets) == 1, "Service %s selects one Deployment" % name)
            for p in d["spec"].get("ports", []):
                tp = p.get("targetPort", p.get("port"))
                ok = any(tp == cp.get("name") or tp == cp.get("containerPort")
                         for dep in targets for c in dep["spec"]["template"]["spec"]["containers"]
                         for cp in c.get("ports", []))
                check(ok, "Service %s: targetPort %s is declared by its pods" % (name, tp))
        elif kind == "PodDisruptionBudget":
            sel = d["spec"]["selector"]["matchLabels"]
            check(any(subset(sel, dep["spec"]["template"]["metadata"]["labels"])
                      for dep in deployments.values()),
                  "PodDisruptionBudget %s selects a Deployment" % name)
        elif kind == "HorizontalPodAutoscaler":
            ref = d["spec"]["scaleTargetRef"]
            check(ref.get("kind") == "Deployment" and ref.get("name") in deployments,
                  "HPA %s scales an existing Deployment" % name)
            check(any(m.get("type") == "External" and "lag" in m["external"]["metric"]["name"]
                      for m in d["spec"].get("metrics", [])),
                  "HPA %s scales on an external consumer-lag metric" % name)
            check(d["spec"]["minReplicas"] <= d["spec"]["maxReplicas"], "HPA %s: min <= max" % name)


def secret_files(value, out, path=""):
    """Every (key path, file) of a *_file key in a gantry.json document."""
    if isinstance(value, dict):
        for k, v in value.items():
            sub = path + "." + k if path else k
            if k.endswith("_file") and isinstance(v, str):
                out.append((sub, v))
            else:
                secret_files(v, out, sub)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            secret_files(v, out, "%s[%d]" % (path, i))
    return out


def config_check(text, files_to_tmp, label, env=None):
    """Runs gantry config check on text, with each *_file path rewritten to a temporary file."""
    if not os.path.exists(GANTRY):
        check(False, "%s: %s is built" % (label, GANTRY))
        return
    tmp = tempfile.mkdtemp(prefix="gantry-deploy-")
    try:
        doc = json.loads(text)
        for _, path in secret_files(doc, []):
            local = os.path.join(tmp, os.path.basename(path))
            with open(local, "w") as f:
                f.write(files_to_tmp(path) + "\n")
            text = text.replace('"%s"' % path, '"%s"' % local)
        cfg = os.path.join(tmp, "gantry.json")
        with open(cfg, "w") as f:
            f.write(text)
        r = subprocess.run([GANTRY, "config", "check", "--config", cfg], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, **(env or {})))
        if not check(r.returncode == 0, "%s is accepted by gantry config check" % label):
            print(r.stderr)
    finally:
        shutil.rmtree(tmp)


def test_k8s_config_and_secrets(docs):
    cms = [d for _, d in docs if d["kind"] == "ConfigMap" and "gantry.json" in d.get("data", {})]
    if not check(len(cms) == 1, "one ConfigMap holds gantry.json"):
        return
    cm = cms[0]
    text = cm["data"]["gantry.json"]
    try:
        doc = json.loads(text)
    except ValueError as e:
        check(False, "ConfigMap gantry.json is JSON: %s" % e)
        return
    secrets = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Secret"}
    refs = secret_files(doc, [])
    check(len(refs) >= 2, "gantry.json reads its secrets through *_file keys")
    for key in re.findall(r'"([a-z_]*(?:api_key|password|secret_access_key|session_token|hash_key|credentials))"\s*:', text):
        check(False, "ConfigMap gantry.json holds no inline secret (found %s)" % key)
    used_keys = set()
    for fn, d, tmpl in pod_specs(docs):
        pod = tmpl["spec"]
        name = d["metadata"]["name"]
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            mounts = {m["mountPath"]: vols.get(m["name"], {}) for m in c.get("volumeMounts", [])}
            cfg_mounted = [p for p, v in mounts.items()
                           if v.get("configMap", {}).get("name") == cm["metadata"]["name"]]
            check(len(cfg_mounted) == 1, "%s mounts the gantry ConfigMap" % name)
            for keypath, file in refs:
                hit = [(p, v) for p, v in mounts.items()
                       if "secret" in v and file.startswith(p.rstrip("/") + "/")]
                if not check(len(hit) == 1, "%s: %s (%s) is on a mounted Secret" % (name, keypath, file)):
                    continue
                mp, vol = hit[0]
                sname = vol["secret"]["secretName"]
                sec = secrets.get(sname)
                skey = file[len(mp.rstrip("/")) + 1:]
                keys = set((sec or {}).get("stringData", {})) | set((sec or {}).get("data", {}))
                check(sec is not None and skey in keys,
                      "%s: Secret %s has key %s for %s" % (name, sname, skey, keypath))
                used_keys.add((sname, skey))
                check(all(m.get("readOnly") for m in c["volumeMounts"] if m["mountPath"] == mp),
                      "%s mounts Secret %s read-only" % (name, sname))
    for sname, sec in secrets.items():
        for k in set(sec.get("stringData", {})) | set(sec.get("data", {})):
            check((sname, k) in used_keys, "Secret %s key %s is used by a *_file key" % (sname, k))
        for v in sec.get("stringData", {}).values():
            check(v == "REPLACE-ME", "Secret %s in git holds placeholders only" % sname)
    config_check(text, lambda path: "placeholder-" + os.path.basename(path), "ConfigMap gantry.json")


def test_kustomize():
    kz = os.path.join(DEPLOY, "k8s", "kustomization.yaml")
    with open(kz) as f:
        k = yaml.safe_load(f)
    listed = set(k.get("resources", []))
    present = {os.path.basename(p) for p in glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml"))}
    check(listed == present - {"kustomization.yaml"},
          "kustomization.yaml lists every manifest (missing %s)" % sorted(present - listed - {"kustomization.yaml"}))
    kubectl = shutil.which("kubectl")
    if kubectl:  # renders offline; no API server needed
        r = subprocess.run([kubectl, "kustomize", os.path.join(DEPLOY, "k8s")], capture_output=True,
                           text=True, timeout=120)
        check(r.returncode == 0, "kubectl kustomize renders deploy/k8s: " + r.stderr.strip()[:300])


# ---- compose ----------------------------------------------------------------

def test_compose():
    with open(os.path.join(DEPLOY, "compose.yaml")) as f:
        c = yaml.safe_load(f)
    services = c.get("services", {})
    for want in ("kafka", "postgres", "migrate", "dispatcher", "ledger", "worker", "mock-hostedai"):
        check(want in services, "compose has a %s service" % want)
    kafka = services.get("kafka", {})
    check(str(kafka.get("image", "")).startswith("apache/kafka"), "compose Kafka is apache/kafka")
    check("controller" in str(kafka.get("environment", {}).get("KAFKA_PROCESS_ROLES", "")),
          "compose Kafka runs in KRaft mode")
    top_secrets = c.get("secrets", {})
    for name, s in services.items():
        check("image" in s or "build" in s, "compose service %s has an image" % name)
        if "build" in s:
            b = s["build"]
            check(os.path.exists(os.path.normpath(os.path.join(DEPLOY, b["context"], b["dockerfile"]))),
                  "compose service %s builds from an existing Dockerfile" % name)
        if name not in ("kafka", "postgres"):
            check("command" in s or "entrypoint" in s, "compose service %s has a command" % name)
        for dep in s.get("depends_on", {}):
            check(dep in services, "compose service %s depends on an existing service %s" % (name, dep))
        for sec in s.get("secrets", []):
            check(sec in top_secrets, "compose secret %s of %s is declared" % (sec, name))
    for name, s in top_secrets.items():
        check(os.path.exists(os.path.join(DEPLOY, s["file"])), "compose secret file %s exists" % s["file"])
    gj = os.path.join(DEPLOY, "compose", "gantry.json")
    with open(gj) as f:
        text = f.read()

    def compose_secret(path):
        with open(os.path.join(DEPLOY, top_secrets[os.path.basename(path)]["file"])) as f:
            return f.read().strip()
    config_check(text, compose_secret, "deploy/compose/gantry.json")
    env = {"GANTRY_KAFKA": "127.0.0.1:9092", "GANTRY_PG": "host=localhost",
           "HOSTEDAI_ENDPOINT": "http://127.0.0.1:8081", "HOSTEDAI_API_KEY": "k"}
    with open(os.path.join(DEPLOY, "gantry.local.json")) as f:
        config_check(f.read(), lambda p: "x", "deploy/gantry.local.json", env)


# ---- systemd ----------------------------------------------------------------

def parse_unit(path):
    sections, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                cur = sections.setdefault(line.strip("[]"), {})
            elif "=" in line and cur is not None:
                k, v = line.split("=", 1)
                cur.setdefault(k, []).append(v)
    return sections


def test_systemd():
    units = sorted(glob.glob(os.path.join(DEPLOY, "systemd", "*.service")))
    check(any("dispatcher" in u for u in units) and any("worker" in u for u in units),
          "systemd units for the dispatcher and the worker")
    for u in units:
        s = parse_unit(u).get("Service", {})
        name = os.path.basename(u)
        user = s.get("User", ["root"])[-1]
        check(user not in ("root", "0"), "%s runs as a non-root user" % name)
        check(s.get("NoNewPrivileges") == ["yes"] and "ProtectSystem" in s,
              "%s has hardening options" % name)
        if s.get("Type", ["simple"])[-1] == "oneshot":
            continue
        check(s.get("Type") == ["simple"], "%s is Type=simple" % name)
        check(s.get("KillSignal") == ["SIGTERM"], "%s stops with SIGTERM" % name)
        check(int(s.get("TimeoutStopSec", ["0"])[-1]) >= 60, "%s: TimeoutStopSec exceeds the drain time" % name)
    analyze = shutil.which("systemd-analyze")
    if analyze:  # verify with the binaries swapped for /bin/true (not installed here)
        tmp = tempfile.mkdtemp(prefix="gantry-units-")
        try:
            paths = []
            for u in glob.glob(os.path.join(DEPLOY, "systemd", "*")):
                with open(u) as f:
                    text = re.sub(r"/opt/gantry/bin/\S+", "/bin/true", f.read())
                base = os.path.basename(u).replace("@.", "@1.")
                with open(os.path.join(tmp, base), "w") as f:
                    f.write(text)
                paths.append(os.path.join(tmp, base))
            r = subprocess.run([analyze, "verify"] + paths, capture_output=True, text=True, timeout=60)
            problems = [l for l in r.stderr.splitlines() if "gantry" in l and "User" not in l]
            check(r.returncode == 0 and not problems, "systemd-analyze verify: %s" % "; ".join(problems)[:400])
        finally:
            shutil.rmtree(tmp)


# ---- metrics: alerts and dashboard -------------------------------------------

METRIC_RE = re.compile(r"\b((?:gantry|hosted_ai)_[a-z0-9_]+)")
# gt_metrics_counter|gauge|histogram("name", "help" "help...", "label,names" | NULL
REGISTER_RE = re.compile(r'gt_metrics_(counter|gauge|histogram)\(\s*"([a-z0-9_]+)"\s*,'
                         r'(?:\s*"(?:[^"\\]|\\.)*")+\s*,\s*(NULL|"([a-z0-9_,]*)")')


def known_metrics():
    """The metrics the code registers (lib/, dispatcher/, workers/): name -> (type, labels).
    Read from the gt_metrics_counter/gauge/histogram calls, so the alerts, the dashboard and
    docs/observability.md cannot drift from what /metrics serves."""
    metrics = {}
    for pattern in ("lib/*.c", "dispatcher/*.c", "workers/*.c"):
        for p in sorted(glob.glob(os.path.join(SRC, pattern))):
            with open(p, errors="replace") as f:
                for kind, name, _, labels in REGISTER_RE.findall(f.read()):
                    entry = (kind, frozenset(l for l in (labels or "").split(",") if l))
                    check(metrics.get(name, entry) == entry,
                          "metric %s is registered with one type and label set (%s)" % (name, p))
                    metrics[name] = entry
    check(len(metrics) >= 15, "the code registers the metrics of issue 7 (found %d)" % len(metrics))
    return metrics


AGG_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER_RE = re.compile(r"\b((?:gantry|hosted_ai)_[a-z0-9_]+)\s*\{([^}]*)\}")


def metric_refs(expr):
    """Metric names an expression reads, with _bucket/_sum/_count of histograms folded."""
    out = set()
    for m in METRIC_RE.findall(expr):
        for suffix in ("_bucket", "_sum", "_count"):
            if m.endswith(suffix) and m[: -len(suffix)].endswith("_seconds"):
                m = m[: -len(suffix)]
        out.add(m)
    return out


def check_expr(where, expr, metrics):
    """Every metric the expression reads is registered (histogram suffixes only on histograms),
    and every label it groups by or matches on is one those metrics carry."""
    refs = metric_refs(expr)
    for m in refs:
        check(m in metrics, "%s uses metric %s, which the code registers" % (where, m))
    for raw in METRIC_RE.findall(expr):
        if raw not in metrics and raw.endswith(("_bucket", "_sum", "_count")):
            base = raw[: raw.rindex("_")]
            check(metrics.get(base, ("",))[0] == "histogram", "%s: %s is a histogram series" % (where, raw))
    labels = set()
    for m in refs:
        labels |= metrics.get(m, ("", frozenset()))[1]
    for group in AGG_RE.findall(expr):
        for l in (x.strip() for x in group.split(",") if x.strip()):
            if l == "le":
                continue
            check(l in labels, "%s groups by label %s, which %s carry" % (where, l, sorted(refs)))
    for m, matchers in MATCHER_RE.findall(expr):
        for l in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
            check(l in metrics.get(m, ("", frozenset()))[1], "%s matches label %s of %s" % (where, l, m))


def test_observability_doc(metrics):
    """docs/observability.md lists every registered metric and no other."""
    with open(os.path.join(SRC, "docs", "observability.md")) as f:
        text = f.read()
    documented = set(re.findall(r"`((?:gantry|hosted_ai)_[a-z0-9_]+)", text))
    for m in metrics:
        check(m in documented, "docs/observability.md documents %s" % m)
    for m in documented - set(metrics):
        if m.endswith(("_bucket", "_sum", "_count")) and m[: m.rindex("_")] in metrics:
            continue
        check(False, "docs/observability.md names %s, which the code does not register" % m)


def test_alerts(metrics):
    path = os.path.join(DEPLOY, "prometheus", "alerts.yaml")
    with open(path) as f:
        doc = yaml.safe_load(f)
    rules = [r for g in doc.get("groups", []) for r in g.get("rules", [])]
    names = [r.get("alert") for r in rules]
    check(len(names) == len(set(names)), "alert names are unique")
    covered = " ".join(r.get("expr", "") for r in rules)
    for topic, needle in (("consumer lag", "gantry_consumer_lag"), ("DLQ rate", "gantry_dlq_entries_total"),
                          ("breaker open", "gantry_breaker"), ("budget rejections", "gantry_budget_rejections_total"),
                          ("outstanding allocations", "allocations_outstanding")):
        check(needle in covered, "an alert on " + topic)
    for r in rules:
        a = r.get("alert", "?")
        check(isinstance(r.get("expr"), str) and r["expr"], "alert %s has expr" % a)
        check(r.get("labels", {}).get("severity") in ("critical", "warning", "info"), "alert %s has a severity" % a)
        check("summary" in r.get("annotations", {}), "alert %s has a summary" % a)
        check(r["expr"].count("(") == r["expr"].count(")"), "alert %s: balanced parentheses" % a)
        check_expr("alert " + a, r.get("expr", ""), metrics)
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, "promtool check rules: " + r.stdout[-300:] + r.stderr[-300:])


def test_dashboard(metrics):
    path = os.path.join(DEPLOY, "grafana", "gantry.json")
    try:
        with open(path) as f:
            d = json.load(f)
    except ValueError as e:
        check(False, "the Grafana dashboard is valid JSON: %s" % e)
        return
    check(d.get("uid") and d.get("title"), "the dashboard has a uid and a title")
    panels = d.get("panels", [])
    ids = [p.get("id") for p in panels]
    check(len(ids) == len(set(ids)), "dashboard panel ids are unique")
    for p in panels:
        for t in p.get("targets", []):
            check_expr("panel %r" % p.get("title"), t.get("expr", ""), metrics)


# ---- Dockerfile ----------------------------------------------------------------

def check_runtime_libraries(runtime_text):
    """The runtime stage installs the package of every shared library the built binaries
    link directly (readelf NEEDED, resolved by ldd, owned per dpkg -S)."""
    if not (shutil.which("readelf") and shutil.which("ldd") and shutil.which("dpkg")):
        print("  Dockerfile: runtime libraries not checked (no readelf/ldd/dpkg)")
        return
    bins = [os.path.join(BUILD, b) for b in ("tools/gantry", "dispatcher/gantry-dispatcher",
                                             "workers/gantry-worker", "tools/gantry-mock-hostedai")]
    needed, paths = set(), {}
    for b in bins:
        if not os.path.exists(b):
            continue
        dyn = subprocess.run(["readelf", "-d", b], capture_output=True, text=True).stdout
        needed.update(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn))
        for line in subprocess.run(["ldd", b], capture_output=True, text=True).stdout.splitlines():
            m = re.match(r"\s*(\S+) => (/\S+)", line)
            if m:
                paths[m.group(1)] = m.group(2)
    for lib in sorted(needed):
        if re.match(r"lib(c|m|asan|ubsan|pthread|dl|rt)\.so", lib) or lib not in paths:
            continue
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(paths[lib])], capture_output=True, text=True)
        if owner.returncode != 0:
            owner = subprocess.run(["dpkg", "-S", paths[lib]], capture_output=True, text=True)
        pkg = owner.stdout.split(":")[0].strip() if owner.returncode == 0 else None
        if pkg:
            check(re.search(r"(^|\s)%s(\s|$)" % re.escape(pkg), runtime_text) is not None,
                  "the runtime stage installs %s (for %s)" % (pkg, lib))


def test_dockerfile():
    path = os.path.join(DEPLOY, "Dockerfile")
    with open(path) as f:
        text = f.read()
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines()
             if l.strip() and not l.strip().startswith("#")]
    stages, cur = {}, None
    for l in lines:
        word, _, rest = l.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            cur = {"base": m.group(1), "user": None, "entrypoint": None, "lines": []}
            base = stages.get(m.group(1))
            if base:
                cur["user"], cur["entrypoint"] = base["user"], base["entrypoint"]
            stages[m.group(2) or "stage%d" % len(stages)] = cur
        elif cur is not None:
            cur["lines"].append(l)
            if word == "USER":
                cur["user"] = rest.split(":")[0]
            elif word == "ENTRYPOINT":
                cur["entrypoint"] = rest
        if word in ("ENV", "ARG"):
            for k in re.findall(r"([A-Za-z_]+)=", rest):
                check(not re.search(r"PASSWORD|SECRET|TOKEN|API_KEY|CREDENTIAL", k, re.I),
                      "Dockerfile sets no secret (%s)" % k)
        if word in ("COPY", "ADD"):
            check(not re.search(r"secret|\.key\b|\.pem\b|password", rest, re.I),
                  "Dockerfile copies no secret file (%s)" % rest)
    check(len(stages) >= 3, "the Dockerfile is multi-stage")
    check("build" in stages and any("meson" in l for l in stages["build"]["lines"]),
          "a build stage builds with meson")
    for target in ("dispatcher", "worker", "cli"):
        st = stages.get(target)
        if not check(st is not None, "the Dockerfile has a %s target" % target):
            continue
        check(st["user"] not in (None, "root", "0"), "target %s runs as non-root (USER %s)" % (target, st["user"]))
        check(st["entrypoint"] is not None, "target %s has an entrypoint" % target)
        check(not any("-dev" in l for l in st["lines"]), "target %s has no -dev packages" % target)
    runtime_base = stages.get("runtime", {}).get("lines", [])
    check(not any(re.search(r"\S+-dev\b", l) for l in runtime_base), "the runtime stage installs no -dev package")
    check_runtime_libraries(" ".join(runtime_base))
    docker = shutil.which("docker")
    engine = docker and subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0
    base = re.search(r"^ARG DEBIAN=(\S+)", open(path).read(), re.M)
    if engine and base and os.environ.get("GANTRY_DOCKER_BUILD", "1") != "0":
        # CI machines reach Debian's archive but not always a container registry:
        # without the base image there is nothing to build from, so lint only.
        have = subprocess.run([docker, "image", "inspect", base.group(1)], capture_output=True).returncode == 0
        if not have:
            have = subprocess.run([docker, "pull", base.group(1)], capture_output=True, timeout=300).returncode == 0
        if not have:
            print("  Dockerfile: linted (Docker engine present, base image %s not reachable)" % base.group(1))
            return
    if engine and os.environ.get("GANTRY_DOCKER_BUILD", "1") != "0":
        for target in ("dispatcher", "worker", "cli"):
            r = subprocess.run([docker, "build", "-f", path, "--target", target, "-t", "gantry-%s:test" % target, SRC],
                               capture_output=True, text=True, timeout=1800)
            check(r.returncode == 0, "docker build --target %s: %s" % (target, r.stderr[-500:]))
        print("  Dockerfile: built with the Docker engine")
    else:
        print("  Dockerfile: linted (%s)" % ("no Docker engine" if not engine else "GANTRY_DOCKER_BUILD=0"))


def main():
    docs = load_k8s()
    metrics = known_metrics()
    for name, fn, args in (("k8s structure", test_k8s_structure, (docs,)),
                           ("k8s workloads", test_k8s_workloads, (docs,)),
                           ("k8s config and secrets", test_k8s_config_and_secrets, (docs,)),
                           ("kustomize", test_kustomize, ()),
                           ("compose", test_compose, ()),
                           ("systemd", test_systemd, ()),
                           ("alerts", test_alerts, (metrics,)),
                           ("dashboard", test_dashboard, (metrics,)),
                           ("observability doc", test_observability_doc, (metrics,)),
                           ("Dockerfile", test_dockerfile, ())):
        before = len(failures)
        try:
            fn(*args)
        except Exception as e:  # a malformed file must fail the test, not crash it silently
            check(False, "%s: %s: %s" % (name, type(e).__name__, e))
        print("%s %s" % ("ok  " if len(failures) == before else "FAIL", name))
    if failures:
        print("%d problem(s)" % len(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
