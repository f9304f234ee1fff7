#!/usr/bin/env bash
# Static checks of the deploy/ files that cannot run here for real (Kubernetes, Prometheus
# rules, the Grafana dashboard, the Dockerfile): promtool checks and rule unit tests, YAML and
# JSON parsing, and cross-checks between the files and authgate's metric names.
#
#   tests/e2e/deploy_checks.sh
#
# Needs promtool (Debian's `prometheus` package) and python3 with PyYAML on PATH; starts no
# process that outlives it and writes only to a temporary directory. If an authgate binary is
# found (AUTHGATE_BIN, else target/release/authgate, else target/debug/authgate) the configs
# embedded in the Kubernetes manifests are also run through `authgate check-config`.
#
# Prints one `PASS: name` / `FAIL: name` line per check (`SKIP: name` when a check cannot run)
# and a final `N passed, M failed` line; exits 1 when a check failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEPLOY="$ROOT/deploy"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/authgate-deploy-checks.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

PASSED=0
FAILED=0

# check NAME CMD...: run CMD with its output in $TMP/out; PASS or FAIL (with the output).
check() {
    local name=$1
    shift
    if "$@" >"$TMP/out" 2>&1; then
        printf 'PASS: %s\n' "$name"
        PASSED=$((PASSED + 1))
    else
        printf 'FAIL: %s\n' "$name"
        sed 's/^/    /' "$TMP/out" | head -n 40
        FAILED=$((FAILED + 1))
    fi
}

fail() {
    printf 'FAIL: %s\n' "$1"
    FAILED=$((FAILED + 1))
}

skip() { printf 'SKIP: %s\n' "$1"; }

# --- tools ------------------------------------------------------------------------------------
HAVE_PROMTOOL=0
if command -v promtool >/dev/null 2>&1; then
    HAVE_PROMTOOL=1
    printf '%s\n' "$(promtool --version 2>&1 | head -n 1)"
else
    fail "promtool on PATH (install Debian's prometheus package); promtool checks not run"
fi
if ! command -v python3 >/dev/null 2>&1; then
    fail "python3 on PATH; YAML/JSON checks not run"
    printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
    exit 1
fi
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
    fail "python3 PyYAML module (pip install pyyaml); YAML checks not run"
    printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
    exit 1
fi

# --- promtool ---------------------------------------------------------------------------------
# Debian's prometheus is built without Kubernetes service discovery, so its promtool rejects
# `kubernetes_sd_configs`. Then prometheus-kubernetes.yml is checked with that block swapped for
# a static target (relabelling, rule files and everything else still checked).
promtool_check_k8s_config() {
    local src="$DEPLOY/prometheus/prometheus-kubernetes.yml"
    local first
    if first=$(promtool check config "$src" 2>&1); then
        printf '%s\n' "$first"
        return 0
    fi
    if [[ $first != *"field kubernetes_sd_configs not found"* ]]; then
        printf '%s\n' "$first"
        return 1
    fi
    echo "(this promtool lacks kubernetes_sd; checking with a static target instead)"
    mkdir -p "$TMP/k8sconf"
    cp "$DEPLOY/prometheus/alerts.yml" "$TMP/k8sconf/"
    python3 - "$src" "$TMP/k8sconf/prometheus.yml" <<'EOF' || return 1
import sys
src, dst = sys.argv[1], sys.argv[2]
text = open(src).read()
block = "    kubernetes_sd_configs:\n      - role: pod\n"
if block not in text:
    sys.exit("kubernetes_sd_configs block not found in the expected form")
open(dst, "w").write(text.replace(block, '    static_configs:\n      - targets: ["10.0.0.1:9090"]\n'))
EOF
    promtool check config "$TMP/k8sconf/prometheus.yml"
}

if ((HAVE_PROMTOOL)); then
    check "promtool check rules deploy/prometheus/alerts.yml" \
        promtool check rules "$DEPLOY/prometheus/alerts.yml"
    check "promtool check config deploy/prometheus/prometheus.yml" \
        promtool check config "$DEPLOY/prometheus/prometheus.yml"
    check "promtool check config deploy/prometheus/prometheus-kubernetes.yml (kubernetes_sd swapped for a static target when promtool lacks it)" \
        promtool_check_k8s_config
    # promtool resolves rule_files relative to the test file.
    check "promtool test rules deploy/prometheus/alerts_test.yml" \
        promtool test rules "$DEPLOY/prometheus/alerts_test.yml"
fi

# --- YAML -------------------------------------------------------------------------------------
yaml_parse() {
    python3 - "$@" <<'EOF'
import sys, yaml
for path in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    if not docs:
        sys.exit(f"{path}: no YAML document")
    print(f"{path}: {len(docs)} document(s)")
EOF
}
shopt -s nullglob
for f in "$DEPLOY"/kubernetes/*.yaml "$DEPLOY"/prometheus/*.yml "$DEPLOY/config.example.yaml"; do
    check "YAML parses: ${f#"$ROOT"/}" yaml_parse "$f"
done

# Kubernetes manifests: kinds and names present; Service selectors, PDB selectors and named
# ports match the Deployments; probes on the admin endpoints; the hardening settings; and the
# termination grace covers authgate's shutdown.grace + drain_timeout.
k8s_consistency() {
    python3 - "$DEPLOY/kubernetes" <<'EOF'
import glob, os, re, sys, yaml

problems = []
def p(msg): problems.append(msg)

def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text).strip())
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return n / 1000 if unit == "ms" else n * {"s": 1, "m": 60, "h": 3600}[unit]

for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.yaml"))):
    name = os.path.basename(path)
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    for d in docs:
        for key in ("apiVersion", "kind"):
            if key not in d:
                p(f"{name}: a document without {key}")
        if not d.get("metadata", {}).get("name"):
            p(f"{name}: {d.get('kind')} without metadata.name")
    configmaps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    for dep in deployments:
        dname = dep["metadata"]["name"]
        spec = dep["spec"]
        tmpl = spec["template"]
        labels = tmpl["metadata"].get("labels", {})
        sel = spec["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in sel.items()):
            p(f"{name}: Deployment {dname}: selector does not match the Pod labels")
        pod = tmpl["spec"]
        containers = pod.get("containers", []) + pod.get("initContainers", [])
        ports = {pt.get("name"): pt["containerPort"] for c in containers for pt in c.get("ports", [])}
        authgate = [c for c in containers if c["name"] == "authgate"]
        if len(authgate) != 1:
            p(f"{name}: Deployment {dname}: expected one container named authgate")
            continue
        c = authgate[0]
        for probe, path_ in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c.get(probe, {}).get("httpGet")
            if not get or get.get("path") != path_:
                p(f"{name}: {dname}/authgate: {probe} is not httpGet {path_}")
            elif ports.get(get["port"], get["port"]) != 9090:
                p(f"{name}: {dname}/authgate: {probe} is not on the admin port 9090")
        sc = c.get("securityContext", {})
        psc = pod.get("securityContext", {})
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            p(f"{name}: {dname}/authgate: runAsNonRoot not set")
        if sc.get("readOnlyRootFilesystem") is not True:
            p(f"{name}: {dname}/authgate: readOnlyRootFilesystem not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            p(f"{name}: {dname}/authgate: allowPrivilegeEscalation not false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            p(f"{name}: {dname}/authgate: capabilities do not drop ALL")
        req = c.get("resources", {}).get("requests", {})
        if not (req.get("cpu") and req.get("memory")) or not c.get("resources", {}).get("limits"):
            p(f"{name}: {dname}/authgate: resource requests or limits missing")
        # The authgate config: from the ConfigMap mounted at /etc/authgate.
        cm = None
        for v in pod.get("volumes", []):
            if "configMap" in v and any(m["name"] == v["name"] and m["mountPath"].startswith("/etc/authgate")
                                        for m in c.get("volumeMounts", [])):
                cm = configmaps.get(v["configMap"]["name"])
        if cm is None:
            p(f"{name}: {dname}/authgate: no ConfigMap from this file mounted at /etc/authgate")
            continue
        cfg = yaml.safe_load(cm["data"]["config.yaml"])
        sd = cfg.get("shutdown", {})
        grace = seconds(sd.get("grace", "5s"))
        drain = seconds(sd.get("drain_timeout", "10s"))
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if grace is None or drain is None:
            p(f"{name}: {dname}: unreadable shutdown durations")
        elif tgps < grace + drain + 5:
            p(f"{name}: {dname}: terminationGracePeriodSeconds {tgps} < shutdown.grace {grace} + drain_timeout {drain} + 5s margin")
        admin = str(cfg.get("listen", {}).get("admin", "0.0.0.0:9090"))
        if not admin.startswith("0.0.0.0:"):
            p(f"{name}: {dname}: listen.admin {admin} is not reachable by the kubelet's probes")
        ann = tmpl["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != admin.rsplit(":", 1)[1]:
            p(f"{name}: {dname}: prometheus.io/scrape|port annotations missing or not the admin port")
    for d in docs:
        kind, dname = d.get("kind"), d["metadata"]["name"]
        if kind in ("Service", "PodDisruptionBudget"):
            sel = d["spec"]["selector"] if kind == "Service" else d["spec"]["selector"]["matchLabels"]
            targets = [dep for dep in deployments
                       if all(dep["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
            if not targets:
                p(f"{name}: {kind} {dname}: selector matches no Deployment in this file")
            if kind == "Service":
                for dep in targets:
                    pod = dep["spec"]["template"]["spec"]
                    regular = {pt.get("name") for c in pod.get("containers", []) for pt in c.get("ports", [])}
                    for sp in d["spec"]["ports"]:
                        tp = sp.get("targetPort", sp["port"])
                        # Services resolve named ports of regular containers only (native
                        # sidecars' from Kubernetes 1.32 on).
                        if isinstance(tp, str) and tp not in regular:
                            p(f"{name}: Service {dname}: targetPort {tp} is not a named port of a regular container of {dep['metadata']['name']}")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print("ok")
EOF
}
check "Kubernetes manifests: selectors, ports, probes, hardening, termination grace" k8s_consistency

# The PrometheusRule in servicemonitor.yaml carries the same groups as alerts.yml.
prometheusrule_in_sync() {
    python3 - "$DEPLOY/kubernetes/servicemonitor.yaml" "$DEPLOY/prometheus/alerts.yml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
if len(rules) != 1:
    sys.exit("expected one PrometheusRule")
if rules[0]["spec"]["groups"] != yaml.safe_load(open(sys.argv[2]))["groups"]:
    sys.exit("PrometheusRule groups differ from deploy/prometheus/alerts.yml")
EOF
}
check "servicemonitor.yaml PrometheusRule == deploy/prometheus/alerts.yml" prometheusrule_in_sync

# The authgate configs embedded in the manifests pass `authgate check-config`.
AUTHGATE_BIN="${AUTHGATE_BIN:-}"
if [[ -z $AUTHGATE_BIN ]]; then
    for b in "$ROOT/target/release/authgate" "$ROOT/target/debug/authgate"; do
        if [[ -x $b ]]; then
            AUTHGATE_BIN=$b
            break
        fi
    done
fi
if [[ -n $AUTHGATE_BIN && -x $AUTHGATE_BIN ]]; then
    python3 - "$DEPLOY/kubernetes" "$TMP" <<'EOF'
import glob, os, sys, yaml
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.yaml"))):
    for d in yaml.safe_load_all(open(path)):
        if d and d.get("kind") == "ConfigMap" and "config.yaml" in d.get("data", {}):
            out = os.path.join(sys.argv[2], f"cm-{os.path.basename(path)}-{d['metadata']['name']}.yaml")
            open(out, "w").write(d["data"]["config.yaml"])
EOF
    for cfg in "$TMP"/cm-*.yaml; do
        label=${cfg#"$TMP"/cm-}
        # Without the AUTHGATE_* variables of this shell: only the file counts.
        check "authgate check-config: ConfigMap ${label%.yaml}" \
            env -u AUTHGATE_CONFIG -u AUTHGATE_ISSUER -u AUTHGATE_AUDIENCE -u AUTHGATE_HTTP_LISTEN \
            -u AUTHGATE_GRPC_LISTEN -u AUTHGATE_ADMIN_LISTEN -u AUTHGATE_LOG_FORMAT \
            "$AUTHGATE_BIN" check-config "$cfg"
    done
else
    skip "authgate check-config of the Kubernetes ConfigMaps (no authgate binary; cargo build --release or set AUTHGATE_BIN)"
fi

# --- Grafana ----------------------------------------------------------------------------------
DASH="$DEPLOY/grafana/authgate-dashboard.json"
check "JSON parses: deploy/grafana/authgate-dashboard.json" python3 -m json.tool "$DASH"

# Structure: a DS_PROMETHEUS input used by every panel, unique ids, panels that do not
# overlap; and the queries collected into a rules file for the PromQL parse below.
dashboard_structure() {
    python3 - "$DASH" "$TMP/dashboard_rules.yml" <<'EOF'
import json, sys, yaml
d = json.load(open(sys.argv[1]))
problems = []
if not 36 <= d.get("schemaVersion", 0) <= 41:
    problems.append(f"schemaVersion {d.get('schemaVersion')} not around 39")
if [i["name"] for i in d.get("__inputs", [])] != ["DS_PROMETHEUS"]:
    problems.append("__inputs is not exactly DS_PROMETHEUS")
ids, cells, rules = set(), set(), []
for panel in d["panels"]:
    if panel["id"] in ids:
        problems.append(f"duplicate panel id {panel['id']}")
    ids.add(panel["id"])
    g = panel["gridPos"]
    if g["x"] + g["w"] > 24:
        problems.append(f"panel {panel['title']!r} wider than the grid")
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            if (x, y) in cells:
                problems.append(f"panel {panel['title']!r} overlaps another at {x},{y}")
                break
            cells.add((x, y))
    if panel["type"] == "row":
        continue
    if panel.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
        problems.append(f"panel {panel['title']!r} does not use ${{DS_PROMETHEUS}}")
    if not panel.get("targets"):
        problems.append(f"panel {panel['title']!r} has no query")
    for t in panel.get("targets", []):
        if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            problems.append(f"panel {panel['title']!r} query {t['refId']} does not use ${{DS_PROMETHEUS}}")
        # Dashboard variables replaced by values Prometheus accepts.
        expr = (t["expr"].replace("$__rate_interval", "5m")
                .replace("$job", ".*").replace("$instance", ".*"))
        rules.append({"record": f"dashboard:panel{panel['id']}:{t['refId']}", "expr": expr})
for v in d.get("templating", {}).get("list", []):
    q = v.get("definition", "")
    if q.startswith("label_values("):
        inner = q[len("label_values("):-1].rsplit(",", 1)[0].replace("$job", ".*")
        rules.append({"record": f"dashboard:variable:{v['name']}", "expr": inner})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"{len(ids)} panels, {len(rules)} queries")
EOF
}
check "Grafana dashboard: inputs, datasources, ids, layout" dashboard_structure
if ((HAVE_PROMTOOL)) && [[ -s $TMP/dashboard_rules.yml ]]; then
    check "Grafana dashboard: every query parses as PromQL (promtool)" \
        promtool check rules "$TMP/dashboard_rules.yml"
fi

# Every authgate_* metric named in the rules and the dashboard is one authgate exports
# (src/telemetry.rs), so a renamed metric cannot leave a silent alert or an empty panel.
metric_names_known() {
    python3 - "$ROOT/src/telemetry.rs" "$DEPLOY/prometheus/alerts.yml" "$DASH" <<'EOF'
import re, sys
known = set(re.findall(r'pub const \w+: &str = "(authgate_\w+)"', open(sys.argv[1]).read()))
if not known:
    sys.exit("no metric names found in src/telemetry.rs")
histograms = {k for k in known if k.endswith("_seconds")}
allowed = known | {h + s for h in histograms for s in ("_bucket", "_sum", "_count")}
used = set()
for path in sys.argv[2:]:
    used |= set(re.findall(r"\b(authgate_[a-z_]+)\b", open(path).read()))
unknown = sorted(used - allowed)
if unknown:
    sys.exit("not exported by authgate: " + ", ".join(unknown))
print(f"{len(used)} names used, all exported")
EOF
}
check "metric names in alerts.yml and the dashboard exist in src/telemetry.rs" metric_names_known

# --- Dockerfile -------------------------------------------------------------------------------
dockerfile_static() {
    python3 - "$DEPLOY/Dockerfile" "$ROOT" <<'EOF'
import os, re, sys
text = open(sys.argv[1]).read()
root = sys.argv[2]
problems = []
lines = [l.strip() for l in text.replace("\\\n", " ").splitlines() if l.strip() and not l.strip().startswith("#")]
froms = [l for l in lines if l.upper().startswith("FROM ")]
if len(froms) < 2:
    problems.append("not multi-stage")
for l in lines:
    if l.upper().startswith("COPY ") and "--from=" not in l:
        for src in l.split()[1:-1]:
            if not os.path.exists(os.path.join(root, src)):
                problems.append(f"COPY source {src} does not exist in the repository")
users = [l.split()[1] for l in lines if l.upper().startswith("USER ")]
if not users or users[-1].split(":")[0] in ("root", "0"):
    problems.append("the final stage does not switch to a non-root USER")
for want in ("cargo build --release --locked", "EXPOSE 8080 9001 9090", 'ENTRYPOINT ["/authgate"]'):
    if want not in text:
        problems.append(f"missing: {want}")
ignore = open(os.path.join(root, ".dockerignore")).read().split()
for want in ("target/", ".git/"):
    if want not in ignore:
        problems.append(f".dockerignore does not exclude {want}")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print("ok (static checks only: docker build is not run here)")
EOF
}
check "Dockerfile: multi-stage, COPY sources exist, non-root, .dockerignore" dockerfile_static

printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
((FAILED == 0))
