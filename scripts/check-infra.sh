#!/usr/bin/env bash
# Offline infrastructure checks for infra/template.yaml. No AWS account, no network.
#   1. long-form intrinsics only (the Rust CLI reads the template with serde_yaml)
#   2. cfn-lint: no errors
#   3. checkov (built-in + infra/policies custom checks) on the SAM template and on its
#      plain-CloudFormation lowering: zero failed checks (skips are justified in the template)
#   4. negative tests: each generated broken copy must FAIL its expected custom check
# Needs .venv (scripts/setup-venv.sh). Exits non-zero on any problem.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.venv"
template="infra/template.yaml"
policies="infra/policies"
broken_dir="infra/tests/broken"

for tool in python cfn-lint checkov; do
  if [ ! -x "$venv/bin/$tool" ]; then
    echo "missing $venv/bin/$tool: run ./scripts/setup-venv.sh first" >&2
    exit 2
  fi
done
py="$venv/bin/python"
# Offline: never ask the Prisma Cloud API for guidelines/mappings.
checkov=("$venv/bin/checkov" --framework cloudformation --skip-download --external-checks-dir "$policies")
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
declare -a summary=()
failed=0
pass() { summary+=("PASS  $1"); }
fail() { summary+=("FAIL  $1"); failed=1; }

echo "== 1/4 long-form intrinsics only"
if grep -nE '(^|[[:space:]:\[{,-])!(Ref|Sub|GetAtt|If|Join|Select|Split|Equals|Not|And|Or|FindInMap|ImportValue|Base64|Cidr|GetAZs|Condition)\b' "$template"; then
  fail "short-form intrinsic tags in $template (use Ref:/Fn::Sub:/Fn::GetAtt: mappings)"
else
  pass "no short-form intrinsic tags"
fi

echo "== 2/4 cfn-lint $("$venv/bin/cfn-lint" --version 2>/dev/null | awk '{print $2}')"
if "$venv/bin/cfn-lint" "$template"; then
  pass "cfn-lint: clean"
else
  fail "cfn-lint reported problems (see above)"
fi

echo "== 3/4 checkov on the SAM template and its plain-CloudFormation lowering"
lowered="$work/template.cfn.yaml"
if "$py" infra/tests/gen_variants.py lower "$template" "$lowered"; then
  if "${checkov[@]}" -f "$template" -f "$lowered" --compact --quiet; then
    pass "checkov: 0 failed checks (SAM + lowered CloudFormation)"
  else
    fail "checkov found failed checks on the good template (see above)"
  fi
else
  fail "could not lower $template to plain CloudFormation (see above)"
fi

echo "== 4/4 negative tests: broken copies must fail"
mkdir -p "$broken_dir" && rm -f "$broken_dir"/*.yaml
if ! "$py" infra/tests/gen_variants.py broken "$template" "$broken_dir" > "$work/expected.txt"; then
  echo "FAIL  could not generate the broken copies (see above)" > "$work/neg.txt"
  failed=1
else
# One checkov run over the whole directory; exit code is 1 by design (failures expected).
"${checkov[@]}" -d "$broken_dir" -o json > "$work/broken.json" 2> "$work/broken.stderr" || true
if ! "$py" - "$work/expected.txt" "$work/broken.json" "$work/broken.stderr" > "$work/neg.txt" <<'PY'
import json, os, sys
expected_file, report_file, stderr_file = sys.argv[1:4]
try:
    report = json.load(open(report_file))
except ValueError:
    print("FAIL  checkov produced no JSON report for the broken copies:")
    print(open(stderr_file).read()[-2000:])
    sys.exit(1)
reports = report if isinstance(report, list) else [report]
failed = {}
for r in reports:
    for f in r.get("results", {}).get("failed_checks", []):
        failed.setdefault(os.path.basename(f["file_path"]), set()).add(f["check_id"])
reasons = {}
for line in open(stderr_file):
    line = line.strip()
    if line.startswith("[CKV_PIPETEL_"):
        # "[CKV_PIPETEL_n] /file.yaml:AWS::X:Name: reason"
        cid, rest = line[1:].split("] ", 1)
        fname = os.path.basename(rest.split(":", 1)[0])
        reasons.setdefault((fname, cid), []).append(rest.split(": ", 1)[-1])
ok = True
for line in open(expected_file):
    path, want = line.split()
    name = os.path.basename(path)
    got = sorted(failed.get(name, ()))
    if want in got:
        why = "; ".join(reasons.get((name, want), [])) or "-"
        print(f"PASS  {name}: caught by {want} ({why}); all failed checks: {', '.join(got)}")
    else:
        ok = False
        print(f"FAIL  {name}: expected {want} to fail, failed checks were: {', '.join(got) or 'none'}")
sys.exit(0 if ok else 1)
PY
then
  failed=1
fi
fi
cat "$work/neg.txt"
while IFS= read -r line; do summary+=("$line"); done < "$work/neg.txt"

echo
echo "== summary ($((SECONDS - start))s)"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "infra checks FAILED" >&2
  exit 1
fi
echo "infra checks passed"
