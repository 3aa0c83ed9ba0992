#!/usr/bin/env python3
"""Static checks of deploy/terraform/aws with python-hcl2 (offline, no providers).

    deploy/tests/test_terraform.py [--dir deploy/terraform/aws]

Checks that every .tf file parses, and that:
  - terraform.required_version and every required provider are version-pinned;
  - every module comes from the registry with an exact version, and the
    arguments given to it are inputs of that version (deploy/tests/tf-module-inputs.json,
    extracted from the module sources at the pinned tags);
  - every variable has a description and a type, every output a description;
  - every var.X / local.X / module.X used is declared, every variable is used;
  - the helm_release installs the chart of this repository, and the keys of
    local.chart_values exist in the chart's values.schema.json;
  - the S3 backend block is present, commented out (remote state stays optional).

Prints one line per check and a closing "N passed, N failed"; exits 1 on failure.

Regenerate the module inputs after bumping a module version:
    test_terraform.py --write-module-inputs eks=<checkout of eks at the tag> vpc=<checkout of vpc>
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Callable

import hcl2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INPUTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tf-module-inputs.json")
# Object-typed module inputs whose attribute names are checked too.
NESTED_INPUTS = {"eks": ["eks_managed_node_groups", "addons"], "vpc": []}


def unquote(s: Any) -> Any:
    if isinstance(s, str) and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s


def clean(node: Any) -> Any:
    """python-hcl2 8 output -> plain data: keys and string literals unquoted, markers dropped."""
    if isinstance(node, dict):
        return {unquote(k): clean(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [clean(v) for v in node]
    return unquote(node)


def blocks(parsed: dict[str, dict], kind: str) -> list[tuple[str, dict]]:
    """[(file, block)] for every top-level block of a kind ("variable", "module", ...)."""
    out = []
    for f, doc in parsed.items():
        for b in doc.get(kind, []):
            out.append((f, b))
    return out


def labelled(parsed: dict[str, dict], kind: str) -> dict[str, dict]:
    out = {}
    for _, b in blocks(parsed, kind):
        for name, body in b.items():
            out[name] = body
    return out


# --------------------------------------------------------------------------- module inputs

def object_attributes(type_src: str) -> list[str]:
    """Attribute names of the outermost object({...}) in an HCL type expression."""
    start = type_src.find("object({")
    if start < 0:
        return []
    i = start + len("object({")
    depth = 1
    names = []
    line_start = True
    while i < len(type_src) and depth > 0:
        ch = type_src[i]
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch == "\n":
            line_start = True
            i += 1
            continue
        if not ch.isspace():
            if depth == 1 and line_start:
                m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*=", type_src[i:])
                if m and m.group(1) not in names:
                    names.append(m.group(1))
            line_start = False
        i += 1
    return names


def module_inputs(checkout: str) -> dict[str, Any]:
    variables: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(checkout, "*.tf"))):
        text = open(path).read()
        for m in re.finditer(r'^variable\s+"([^"]+)"\s*\{', text, re.M):
            # the block's source text, up to the next top-level "}"
            end = re.search(r"^\}", text[m.end():], re.M)
            variables[m.group(1)] = text[m.end(): m.end() + (end.start() if end else len(text))]
    return {
        "variables": sorted(variables),
        "nested": {name: object_attributes(variables[name]) for name in variables if "object({" in variables[name]},
    }


def write_module_inputs(specs: list[str], parsed: dict[str, dict]) -> None:
    modules = labelled(parsed, "module")
    data = {}
    for spec in specs:
        name, checkout = spec.split("=", 1)
        mod = clean(modules[name])
        info = module_inputs(checkout)
        data[name] = {
            "source": mod["source"],
            "version": mod["version"],
            "variables": info["variables"],
            "nested": {k: v for k, v in info["nested"].items() if k in NESTED_INPUTS.get(name, [])},
        }
    with open(INPUTS_FILE, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {INPUTS_FILE}")


# --------------------------------------------------------------------------- schema walk

def schema_paths(schema: dict, node: Any, values: Any, path: str, bad: list[str]) -> None:
    """Every key of `values` must be allowed by the JSON schema `node`."""
    defs = schema.get("definitions", {})
    while "$ref" in node:
        node = defs[node["$ref"].split("/")[-1]]
    if not isinstance(values, dict):
        return
    props = node.get("properties", {})
    addl = node.get("additionalProperties", True)
    for k, v in values.items():
        if k in props:
            schema_paths(schema, props[k], v, f"{path}.{k}", bad)
        elif addl is False:
            bad.append(f"{path}.{k} is not a chart value")
        elif isinstance(addl, dict):
            schema_paths(schema, addl, v, f"{path}.{k}", bad)


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.path.join(ROOT, "deploy/terraform/aws"))
    ap.add_argument("--write-module-inputs", nargs="+", metavar="NAME=CHECKOUT")
    a = ap.parse_args()

    passed = failed = 0

    def check(name: str, fn: Callable[[], list[str] | None]) -> None:
        nonlocal passed, failed
        try:
            problems = fn() or []
        except Exception as e:
            problems = [f"{type(e).__name__}: {e}"]
        if problems:
            failed += 1
            print(f"FAIL {name}")
            for p in problems[:25]:
                print(f"     - {p}")
        else:
            passed += 1
            print(f"ok   {name}")

    files = sorted(glob.glob(os.path.join(a.dir, "*.tf")))
    parsed_raw: dict[str, dict] = {}
    texts: dict[str, str] = {}

    def parse_all() -> list[str]:
        bad = []
        for f in files:
            texts[f] = open(f).read()
            try:
                with open(f) as fh:
                    parsed_raw[os.path.basename(f)] = hcl2.load(fh)
            except Exception as e:
                bad.append(f"{os.path.basename(f)}: {e}")
        if not files:
            bad.append(f"no .tf files in {a.dir}")
        return bad

    check(f"python-hcl2 parses {len(files)} .tf files", parse_all)
    if failed:
        print(f"{passed} passed, {failed} failed")
        return 1
    parsed = {f: clean(d) for f, d in parsed_raw.items()}
    if a.write_module_inputs:
        write_module_inputs(a.write_module_inputs, parsed)
        return 0
    all_text = "\n".join(re.sub(r"#.*", "", t) for t in texts.values())

    def c_versions() -> list[str]:
        bad = []
        tf = [b for _, b in blocks(parsed, "terraform")]
        if not any(b.get("required_version") for b in tf):
            bad.append("terraform.required_version missing")
        providers = {}
        for b in tf:
            for rp in b.get("required_providers", []):
                providers.update(rp)
        for name, p in providers.items():
            if not isinstance(p, dict) or not p.get("version") or not p.get("source"):
                bad.append(f"provider {name}: source and version constraint required")
            elif not re.match(r"^(~>|=|>=)\s*\d", p["version"]):
                bad.append(f"provider {name}: version {p['version']!r} is not a pin")
        used = set(re.findall(r'^\s*(?:resource|data)\s+"([a-z0-9]+)_', all_text, re.M))
        missing = sorted(used - set(providers))
        if missing:
            bad.append(f"providers used but not in required_providers: {missing}")
        return bad

    check("required_version and every provider pinned", c_versions)

    modules = labelled(parsed, "module")

    def c_modules() -> list[str]:
        bad = []
        try:
            known = json.load(open(INPUTS_FILE))
        except FileNotFoundError:
            known = {}
        for name, m in modules.items():
            src, ver = m.get("source", ""), m.get("version", "")
            if not re.fullmatch(r"terraform-aws-modules/[a-z0-9-]+/aws", src):
                bad.append(f"module {name}: source {src!r} is not a terraform-aws-modules registry module")
            if not re.fullmatch(r"\d+\.\d+\.\d+", ver):
                bad.append(f"module {name}: version {ver!r} is not an exact pin")
            k = known.get(name)
            if not k:
                bad.append(f"module {name}: no input list in {os.path.basename(INPUTS_FILE)}")
                continue
            if (k["source"], k["version"]) != (src, ver):
                bad.append(f"module {name}: {src} {ver} but the input list is for {k['source']} {k['version']}: regenerate it")
                continue
            args = set(m) - {"source", "version", "providers", "depends_on", "count", "for_each"}
            unknown = sorted(args - set(k["variables"]))
            if unknown:
                bad.append(f"module {name}: unknown inputs {unknown}")
            for var, attrs in k["nested"].items():
                raw = parsed_raw_module(name).get(var)
                given = nested_keys(raw)
                extra = sorted(given - set(attrs))
                if extra:
                    bad.append(f"module {name}: {var} has unknown attributes {extra}")
        return bad

    def parsed_raw_module(name: str) -> dict:
        for _, b in blocks(parsed_raw, "module"):
            for k, body in b.items():
                if unquote(k) == name:
                    return body
        return {}

    def nested_keys(raw: Any) -> set[str]:
        """Attribute names of the map entries given to a map(object) input (literal or for-expression)."""
        if raw is None:
            return set()
        if isinstance(raw, dict):  # literal map: { key = { attr = ... } }
            keys: set[str] = set()
            for v in raw.values():
                if isinstance(v, dict):
                    keys |= {unquote(x) for x in v if not x.startswith("__")}
            return keys
        text = str(raw)
        m = re.search(r"=>\s*\{(.*)\}\s*\}", text, re.S)  # {for ... : k => { attrs }}
        body = m.group(1) if m else ""
        depth, names, token = 0, set(), ""
        i = 0
        while i < len(body):
            ch = body[i]
            if ch in "{[(":
                depth += 1
            elif ch in "}])":
                depth -= 1
            elif depth == 0:
                mm = re.match(r"(?:^|,)\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)", body[i:])
                if mm and (i == 0 or body[i] == ","):
                    names.add(mm.group(1))
            i += 1
        return names

    check("modules: registry source, exact version, known inputs", c_modules)

    variables = labelled(parsed, "variable")
    outputs = labelled(parsed, "output")

    def c_variables() -> list[str]:
        bad = []
        for name, v in variables.items():
            if not v.get("description"):
                bad.append(f"variable {name}: no description")
            if not v.get("type"):
                bad.append(f"variable {name}: no type")
        with_validation = [n for n, v in variables.items() if v.get("validation")]
        if len(with_validation) < len(variables) // 2:
            bad.append(f"only {len(with_validation)} of {len(variables)} variables have a validation block")
        return bad

    check(f"{len(variables)} variables have description and type (most with validation)", c_variables)
    check(f"{len(outputs)} outputs have descriptions",
          lambda: [f"output {n}: no description" for n, o in outputs.items() if not o.get("description")])

    for wanted in ("cluster_name", "kubeconfig_command", "ui_address", "ecr_registry"):
        check(f"output {wanted} exists", lambda w=wanted: [] if w in outputs else [f"no output {w}"])

    def c_references() -> list[str]:
        bad = []
        used_vars = set(re.findall(r"\bvar\.([A-Za-z0-9_]+)", all_text))
        for v in sorted(used_vars - set(variables)):
            bad.append(f"var.{v} is not declared")
        for v in sorted(set(variables) - used_vars):
            bad.append(f"variable {v} is never used")
        locals_ = set()
        for _, b in blocks(parsed, "locals"):
            locals_ |= set(b)
        for l in sorted(set(re.findall(r"\blocal\.([A-Za-z0-9_]+)", all_text)) - locals_):
            bad.append(f"local.{l} is not defined")
        for m in sorted(set(re.findall(r"\bmodule\.([A-Za-z0-9_]+)", all_text)) - set(modules)):
            bad.append(f"module.{m} is not declared")
        return bad

    check("every var/local/module reference is declared; every variable is used", c_references)

    def c_helm_release() -> list[str]:
        bad = []
        releases = [body for _, b in blocks(parsed, "resource") for t, rs in b.items() if t == "helm_release" for body in rs.values()]
        if not releases:
            return ["no helm_release"]
        for r in releases:
            chart = r.get("chart", "")
            locals_ = {k: v for _, b in blocks(parsed, "locals") for k, v in b.items()}
            m = re.fullmatch(r"\$\{local\.(\w+)\}", str(chart))
            if m:
                chart = locals_.get(m.group(1), chart)
            path = str(chart).replace("${path.module}", a.dir)
            if not os.path.isfile(os.path.join(path, "Chart.yaml")):
                bad.append(f"helm_release chart {chart!r} is not the repository chart ({path})")
        return bad

    check("helm_release installs ../../../helm/shoal", c_helm_release)

    def c_chart_values() -> list[str]:
        locals_ = {k: v for _, b in blocks(parsed, "locals") for k, v in b.items()}
        values = locals_.get("chart_values")
        if not isinstance(values, dict):
            return ["local.chart_values is not an object literal"]
        schema = json.load(open(os.path.join(ROOT, "helm/shoal/values.schema.json")))
        bad: list[str] = []
        schema_paths(schema, schema, values, "", bad)
        return bad

    check("keys of local.chart_values exist in helm/shoal/values.schema.json", c_chart_values)

    def c_ecr() -> list[str]:
        bad = []
        repos = [body for _, b in blocks(parsed, "resource") for t, rs in b.items() if t == "aws_ecr_repository" for body in rs.values()]
        if not repos:
            return ["no aws_ecr_repository"]
        for r in repos:
            if r.get("image_tag_mutability") != "IMMUTABLE":
                bad.append("ECR tags are not immutable")
            if not any(s.get("scan_on_push") is True for s in r.get("image_scanning_configuration", [])):
                bad.append("ECR scan on push is off")
            if not any(e.get("encryption_type") in ("KMS", "AES256") for e in r.get("encryption_configuration", [])):
                bad.append("ECR encryption not configured")
            if "shoal-${each.key}" not in str(r.get("name")):
                bad.append(f"ECR repository name {r.get('name')!r} is not <prefix>/shoal-<service>")
        return bad

    check("ECR repositories: immutable tags, scan on push, encryption, shoal-<service>", c_ecr)

    def c_backend() -> list[str]:
        text = "".join(texts.values())
        bad = []
        if re.search(r'^\s*backend\s+"', all_text, re.M):
            bad.append("an active backend block: remote state must stay optional (commented)")
        if not re.search(r'^#\s*backend\s+"s3"', text, re.M):
            bad.append("no commented S3 backend example")
        return bad

    check("remote state optional: commented S3 backend block", c_backend)

    def c_postgres_optional() -> list[str]:
        bad = []
        default = variables.get("enable_postgres", {}).get("default")
        if default is not False:
            bad.append("enable_postgres must default to false")
        for _, b in blocks(parsed, "resource"):
            for t, rs in b.items():
                if t.startswith("aws_db_") or t == "random_password":
                    for name, body in rs.items():
                        if "enable_postgres" not in str(body.get("count", "")):
                            bad.append(f"{t}.{name} is not conditional on enable_postgres")
        inst = [body for _, b in blocks(parsed, "resource") for t, rs in b.items() if t == "aws_db_instance" for body in rs.values()]
        if not inst or inst[0].get("multi_az") is not True:
            bad.append("RDS is not Multi-AZ")
        return bad

    check("RDS PostgreSQL is optional (off by default) and Multi-AZ", c_postgres_optional)

    locals_all = {k: v for _, b in blocks(parsed, "locals") for k, v in b.items()}

    def c_network_policy() -> list[str]:
        np = (locals_all.get("chart_values") or {}).get("networkPolicy") or {}
        bad = []
        if "ipBlock" in json.dumps(np.get("clients", [])):
            bad.append("networkPolicy.clients has an ipBlock: with VPC CNI every pod has a VPC address, "
                       "so tracker and peer gRPC would be open to every pod")
        if "vpc_cidr" in json.dumps({k: v for k, v in np.items() if k != "webserverGrpcFrom"}):
            bad.append("the VPC CIDR opens more than the webserver's gRPC port")
        return bad

    check("NetworkPolicy: tracker and peers by pod selectors only, never the VPC CIDR", c_network_policy)

    def c_install_chart_off() -> list[str]:
        default = variables.get("install_chart", {}).get("default")
        return [] if default is False else [f"install_chart defaults to {default!r}: the first apply "
                                            "has no images in ECR yet (two-phase bootstrap)"]

    check("install_chart is off until the images exist (two-phase bootstrap)", c_install_chart_off)

    def c_fullname() -> list[str]:
        bad = []
        if "${var.release_name}-webserver" in all_text:
            bad.append("a webserver name built from release_name: the chart names it <fullname>-webserver")
        svc = [body for _, b in blocks(parsed, "data") for t, rs in b.items() if t == "kubernetes_service_v1"
               for body in rs.values()]
        names = [m.get("name") for body in svc for m in body.get("metadata", [])]
        if names != ["${local.fullname}-webserver"]:
            bad.append(f"webserver Service looked up as {names}, not ${{local.fullname}}-webserver")
        expr = str(locals_all.get("fullname", ""))
        if not expr.startswith("${"):
            return bad + ["no local.fullname expression"]
        terraform, helm = shutil.which(os.environ.get("TERRAFORM", "terraform")), os.environ.get("HELM", "")
        if not terraform or not os.path.exists(helm):
            print("     (terraform or helm not here: local.fullname not evaluated)")
            return bad
        # Evaluate the real expression with `terraform console` (no provider needed) and
        # compare with the chart's Service names for several release names.
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "main.tf"), "w") as f:
                f.write('variable "release_name" { type = string }\n'
                        f'locals {{\n  fullname = {expr[2:-1]}\n}}\n'
                        'output "fullname" { value = local.fullname }\n')
            for release in ["shoal", "prod", "my-shoal-eu", "x" * 40, "a" * 35 + "-shoal"[:5]]:
                got = subprocess.run([terraform, "console", f"-var=release_name={release}"], cwd=tmp,
                                     input="local.fullname\n", capture_output=True, text=True, timeout=60,
                                     env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull})
                tf_name = got.stdout.strip().strip('"')
                out = subprocess.run([helm, "template", release, os.path.join(ROOT, "helm/shoal"),
                                      "--show-only", "templates/webserver-service.yaml"],
                                     capture_output=True, text=True, timeout=60)
                svc_names = re.findall(r"^  name: (\S+)$", out.stdout, re.M)
                if got.returncode != 0 or out.returncode != 0:
                    bad.append(f"release {release}: terraform {got.stderr.strip()[-200:]} helm {out.stderr.strip()[-200:]}")
                elif f"{tf_name}-webserver" not in svc_names:
                    bad.append(f"release {release}: Terraform looks up {tf_name}-webserver, the chart names {svc_names}")
        return bad

    check("the webserver Service name comes from the chart's fullname (evaluated for 5 release names)", c_fullname)

    def c_iam_names() -> list[str]:
        # IAM name_prefix: at most 38 characters (AWS appends 26); node group name prefix 37.
        longest = {"${var.name}": "n" * 20, "${idx}": "9", "${az}": "ap-southeast-1a"}

        def widest(expr: str) -> str:
            for k, v in longest.items():
                expr = expr.replace(k, v)
            return expr

        bad = []
        eks = re.search(r'iam_role_name\s*=\s*"([^"]+)"', texts[os.path.join(a.dir, "eks.tf")] if
                        os.path.join(a.dir, "eks.tf") in texts else "")
        if not eks:
            bad.append("eks node groups leave iam_role_name to the module (<name>-<zone>-eks-node-group is too long)")
        else:
            role = widest(eks.group(1)) + "-"
            if "${" in role or len(role) > 38:
                bad.append(f"node group IAM role prefix {role!r} ({len(role)} chars) over 38")
        ng = re.search(r'^\s*name\s*=\s*"(\$\{var\.name\}-\$\{az\})"', "\n".join(texts.values()), re.M)
        if ng and len(widest(ng.group(1)) + "-") > 37:
            bad.append(f"node group name prefix {widest(ng.group(1))!r} over 37")
        for _, b in blocks(parsed, "resource"):
            for t, rs in b.items():
                if t != "aws_iam_role":
                    continue
                for name, body in rs.items():
                    prefix = widest(str(body.get("name_prefix", "")))
                    if "${" in prefix or len(prefix) > 38:
                        bad.append(f"aws_iam_role.{name} name_prefix {prefix!r} ({len(prefix)} chars) over 38")
        return bad

    check("IAM role name prefixes fit AWS's 38 characters for every allowed name", c_iam_names)

    def resource(kind: str, name: str) -> dict:
        for _, b in blocks(parsed, "resource"):
            if name in b.get(kind, {}):
                return b[kind][name]
        return {}

    def datasource(kind: str, name: str) -> dict:
        for _, b in blocks(parsed, "data"):
            if name in b.get(kind, {}):
                return b[kind][name]
        return {}

    def c_backup_bucket() -> list[str]:
        bad = []
        bucket = resource("aws_s3_bucket", "backup")
        if not bucket:
            return ["no aws_s3_bucket.backup"]
        if bucket.get("force_destroy") is not False:
            bad.append("the backup bucket can be destroyed with its snapshots (force_destroy)")
        prefix = str(bucket.get("bucket_prefix", "")).replace("${var.name}", "n" * 20)
        if "${" in prefix or len(prefix) > 37:
            bad.append(f"bucket_prefix {prefix!r} ({len(prefix)} chars) over S3's 37 for the longest name")
        ver = resource("aws_s3_bucket_versioning", "backup").get("versioning_configuration", [{}])
        if ver[0].get("status") != "Enabled":
            bad.append("versioning is not Enabled")
        sse = resource("aws_s3_bucket_server_side_encryption_configuration", "backup").get("rule", [{}])[0]
        by_default = (sse.get("apply_server_side_encryption_by_default") or [{}])[0]
        if by_default.get("sse_algorithm") != "aws:kms" or "aws_kms_key" not in str(by_default.get("kms_master_key_id")):
            bad.append(f"not encrypted with the deployment's KMS key: {by_default}")
        pab = resource("aws_s3_bucket_public_access_block", "backup")
        for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
            if pab.get(k) is not True:
                bad.append(f"public access block: {k} is not true")
        own = resource("aws_s3_bucket_ownership_controls", "backup").get("rule", [{}])[0]
        if own.get("object_ownership") != "BucketOwnerEnforced":
            bad.append("ACLs not disabled (BucketOwnerEnforced)")
        life = resource("aws_s3_bucket_lifecycle_configuration", "backup").get("rule", [])
        if not any(r.get("expiration") and r.get("noncurrent_version_expiration") for r in life):
            bad.append("no lifecycle rule expiring old snapshots and their old versions")
        pol = datasource("aws_iam_policy_document", "backup_bucket").get("statement", [])
        if not any(st.get("effect") == "Deny" and any(c.get("variable") == "aws:SecureTransport" and c.get("values") == ["false"]
                                                      for c in st.get("condition", [])) for st in pol):
            bad.append("the bucket policy does not deny plain HTTP")
        for _, b in blocks(parsed, "resource"):
            for t, rs in b.items():
                for name, body in rs.items():
                    if name == "backup" and "local.backup_enabled" not in str(body.get("count", "")):
                        bad.append(f"{t}.backup is not conditional on local.backup_enabled")
        if locals_all.get("backup_enabled") != "${var.enable_catalogue_backup && !var.enable_postgres}":
            bad.append(f"local.backup_enabled = {locals_all.get('backup_enabled')!r}: backups with the embedded store only")
        if variables.get("enable_catalogue_backup", {}).get("default") is not True:
            bad.append("enable_catalogue_backup must default to true (the catalogue is on one volume)")
        return bad

    check("backup bucket: versioned, KMS-encrypted, public access blocked, ACLs off, TLS only, expiring, "
          "fits S3's name limits, kept on destroy", c_backup_bucket)

    def c_backup_irsa() -> list[str]:
        bad = []
        role = resource("aws_iam_role", "backup")
        if not role:
            return ["no aws_iam_role.backup"]
        assume = datasource("aws_iam_policy_document", "backup_assume").get("statement", [])
        if len(assume) != 1:
            return bad + ["the backup role's trust policy is not one statement"]
        st = assume[0]
        if st.get("actions") != ["sts:AssumeRoleWithWebIdentity"]:
            bad.append(f"trust actions {st.get('actions')}")
        fed = (st.get("principals") or [{}])[0]
        if fed.get("type") != "Federated" or fed.get("identifiers") != ["${module.eks.oidc_provider_arn}"]:
            bad.append(f"trust principal {fed} is not the cluster's OIDC provider")
        conds = {c.get("variable"): c for c in st.get("condition", [])}
        sub = conds.get("${module.eks.oidc_provider}:sub", {})
        want = ["system:serviceaccount:${var.namespace}:${local.backup_service_account}"]
        if sub.get("test") != "StringEquals" or sub.get("values") != want:
            bad.append(f"trust sub condition {sub}: want StringEquals {want}")
        aud = conds.get("${module.eks.oidc_provider}:aud", {})
        if aud.get("values") != ["sts.amazonaws.com"]:
            bad.append("trust aud condition is not sts.amazonaws.com")
        if locals_all.get("backup_service_account") != "${local.fullname}-backup":
            bad.append("local.backup_service_account is not the chart's <fullname>-backup")
        eks = [body for _, b in blocks(parsed, "module") for n, body in b.items() if n == "eks"]
        if not eks or eks[0].get("enable_irsa") is not True:
            bad.append("module.eks does not enable IRSA (OIDC provider)")
        write = datasource("aws_iam_policy_document", "backup_write").get("statement", [])
        actions = sorted(a for st in write for a in st.get("actions", []))
        if actions != ["kms:Decrypt", "kms:GenerateDataKey", "s3:PutObject"]:
            bad.append(f"backup role may do {actions}: it only writes snapshots")
        for st in write:
            if "s3:PutObject" in st.get("actions", []) and st.get("resources") != \
                    ["${aws_s3_bucket.backup[0].arn}/${local.backup_prefix}/*"]:
                bad.append(f"PutObject on {st.get('resources')}, not the snapshot prefix alone")
        # The chart gets the bucket, the prefix, the key and the role.
        b = (locals_all.get("chart_values") or {}).get("backup") or {}
        if b.get("enabled") != "${local.backup_enabled}" or b.get("destination") != "s3":
            bad.append(f"chart backup values {b.get('enabled')!r}/{b.get('destination')!r}")
        s3 = b.get("s3") or {}
        if "aws_s3_bucket.backup" not in str(s3.get("bucket")) or s3.get("prefix") != "${local.backup_prefix}" \
                or "aws_kms_key.shoal" not in str(s3.get("kmsKeyId")):
            bad.append(f"chart backup.s3 {s3}")
        if "eks.amazonaws.com/role-arn" not in str((b.get("serviceAccount") or {}).get("annotations")):
            bad.append("the chart's backup ServiceAccount gets no IRSA role annotation")
        outs = {"backup_bucket", "backup_role_arn"} - set(outputs)
        if outs:
            bad.append(f"missing outputs {sorted(outs)}")
        # The chart names the ServiceAccount <fullname>-backup for any release name.
        helm = os.environ.get("HELM", "")
        if os.path.exists(helm):
            for release in ("shoal", "prod"):
                out = subprocess.run([helm, "template", release, os.path.join(ROOT, "helm/shoal"), "--set",
                                      "backup.enabled=true", "--show-only", "templates/backup-cronjob.yaml"],
                                     capture_output=True, text=True, timeout=60)
                sa = re.findall(r"^kind: ServiceAccount\nmetadata:\n  name: (\S+)$", out.stdout, re.M)
                want_sa = "shoal-backup" if release == "shoal" else f"{release}-shoal-backup"
                if sa != [want_sa]:
                    bad.append(f"release {release}: chart backup ServiceAccount {sa}, want [{want_sa}]")
        return bad

    check("backup IRSA role: trusted by the release's backup ServiceAccount only, writes snapshots only; "
          "the chart gets bucket, prefix, key and role", c_backup_irsa)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
