# Observability checks (docs/observability.md): Prometheus rules/config and Grafana dashboards.
#
# Included from the top-level Makefile:
#
#     -include deploy/observability.mk
#
# or used alone from the repository root:
#
#     make -f deploy/observability.mk promtool-check dashboards-check
#
# Targets:
#   promtool-check       promtool check rules / check config / test rules (installs Debian's
#                        prometheus package when promtool is missing; deploy/scripts/promtool-check.sh)
#   dashboards-check     deploy/grafana/*.json: valid JSON, uid/title/schemaVersion, unique panel ids,
#                        every query uses the ${datasource} variable, chart copies identical; writes
#                        the shoal_* metric names the dashboards query to target/dashboard-metrics.txt
#                        (and those of alerts.yml to target/alert-metrics.txt) and fails on a name
#                        that no service's source exports
#   observability-check  both

PYTHON3 ?= python3
OBS_GRAFANA_DIR ?= deploy/grafana
OBS_HELM_DASHBOARDS ?= helm/shoal/dashboards
OBS_ALERTS ?= deploy/prometheus/alerts.yml
OBS_OUT_DIR ?= target

.PHONY: promtool-check dashboards-check observability-check

## promtool-check: offline Prometheus checks (rules, config, rule unit tests)
promtool-check:
	@bash deploy/scripts/promtool-check.sh

## dashboards-check: Grafana dashboards lint + metric names -> target/dashboard-metrics.txt
dashboards-check:
	@mkdir -p '$(OBS_OUT_DIR)'
	@OBS_GRAFANA_DIR='$(OBS_GRAFANA_DIR)' OBS_HELM_DASHBOARDS='$(OBS_HELM_DASHBOARDS)' \
	  OBS_ALERTS='$(OBS_ALERTS)' OBS_OUT_DIR='$(OBS_OUT_DIR)' $(PYTHON3) -c "$$OBS_DASHBOARDS_CHECK_PY"

## observability-check: promtool-check and dashboards-check
observability-check: promtool-check dashboards-check

# The dashboards check (python3, standard library only). Kept free of dollar signs,
# which make would expand.
define OBS_DASHBOARDS_CHECK_PY
import glob, json, os, re, sys

grafana = os.environ["OBS_GRAFANA_DIR"]
helm = os.environ["OBS_HELM_DASHBOARDS"]
alerts = os.environ["OBS_ALERTS"]
out_dir = os.environ["OBS_OUT_DIR"]
NAME = re.compile(r"shoal_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_sum", "_count")
DS_VAR = chr(36) + "{datasource}"  # the datasource template variable
errors = []

def err(msg):
    errors.append(msg)

def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels") or [])

# Names the services register, from their source. The prometheus-client encoder
# exports a counter X as X_total and a histogram X as X_bucket, X_sum and X_count;
# types are checked on a real scrape (services/testkit/tests/it/metrics.rs), not here.
source_names = set()
for path in glob.glob("services/*/src/**/*.rs", recursive=True):
    text = open(path, encoding="utf-8").read()
    source_names.update(NAME.findall(text))

def exported(n):
    return n in source_names or any(
        n.endswith(s) and n[: -len(s)] in source_names for s in ("_total",) + SUFFIXES
    )

def names_in(exprs):
    raw = set()
    for e in exprs:
        raw.update(NAME.findall(e))
    histograms = set(source_names)
    histograms.update(n[: -len("_bucket")] for n in raw if n.endswith("_bucket"))
    names = set()
    for n in raw:
        for s in SUFFIXES:
            if n.endswith(s) and n[: -len(s)] in histograms:
                n = n[: -len(s)]
                break
        names.add(n)
    return names

files = sorted(glob.glob(os.path.join(grafana, "*.json")))
if not files:
    err("no dashboards in " + grafana)
exprs, uids = [], {}
for f in files:
    try:
        d = json.load(open(f, encoding="utf-8"))
    except ValueError as e:
        err(f + ": invalid JSON: " + str(e))
        continue
    for key in ("title", "uid", "panels", "schemaVersion", "templating"):
        if key not in d:
            err(f + ": no " + key)
    if d.get("uid") in uids:
        err(f + ": uid " + str(d.get("uid")) + " also used by " + uids[d.get("uid")])
    uids[d.get("uid")] = f
    variables = [v.get("name") for v in (d.get("templating") or {}).get("list", [])]
    if "datasource" not in variables:
        err(f + ": no datasource template variable")
    for v in (d.get("templating") or {}).get("list", []):
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        if v.get("type") == "query":
            exprs.append(q)
            exprs.append(v.get("definition") or "")
    ids = {}
    for p in walk_panels(d.get("panels") or []):
        pid = p.get("id")
        where = f + ": panel " + repr(p.get("title"))
        if not isinstance(pid, int):
            err(where + ": no integer id")
        elif pid in ids:
            err(where + ": id " + str(pid) + " also used by panel " + repr(ids[pid]))
        else:
            ids[pid] = p.get("title")
        if "gridPos" not in p:
            err(where + ": no gridPos")
        if p.get("type") == "row":
            continue
        targets = p.get("targets") or []
        if not targets:
            err(where + ": no targets")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)):
            err(where + ": duplicate refId")
        for t in targets:
            e = t.get("expr") or ""
            if not e.strip():
                err(where + ": target " + str(t.get("refId")) + " has no expr")
            if (t.get("datasource") or p.get("datasource") or {}).get("uid") != DS_VAR:
                err(where + ": target " + str(t.get("refId")) + " does not use the datasource variable")
            exprs.append(e)
    mirror = os.path.join(helm, os.path.basename(f))
    if not os.path.exists(mirror) or open(mirror, "rb").read() != open(f, "rb").read():
        err(mirror + " differs from " + f + " (run: make -f deploy/deploy.mk helm-dashboards)")

dashboard_names = sorted(names_in(exprs))
alert_exprs = []
if os.path.exists(alerts):
    for line in open(alerts, encoding="utf-8"):
        m = re.match(r"\s*expr:\s*(.*)", line)
        if m:
            alert_exprs.append(m.group(1))
alert_names = sorted(names_in(alert_exprs))

for label, names in (("dashboards", dashboard_names), ("alerts", alert_names)):
    for n in names:
        if not exported(n):
            err(label + " query " + n + ", which no service exports (not in services/*/src)")

with open(os.path.join(out_dir, "dashboard-metrics.txt"), "w") as fh:
    fh.write("".join(n + chr(10) for n in dashboard_names))
with open(os.path.join(out_dir, "alert-metrics.txt"), "w") as fh:
    fh.write("".join(n + chr(10) for n in alert_names))

for e in errors:
    print("FAIL " + e)
print("dashboards: " + ", ".join(os.path.basename(f) for f in files))
print(str(len(dashboard_names)) + " metric names -> " + os.path.join(out_dir, "dashboard-metrics.txt")
      + "; " + str(len(alert_names)) + " in alerts -> " + os.path.join(out_dir, "alert-metrics.txt"))
print("dashboards-check: " + ("failed, " + str(len(errors)) + " problems" if errors else "ok"))
sys.exit(1 if errors else 0)
endef
export OBS_DASHBOARDS_CHECK_PY
