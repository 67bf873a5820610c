"""pipetel custom checkov checks (CloudFormation / SAM).

Loaded by scripts/check-infra.sh with `checkov --external-checks-dir infra/policies`.

CKV_PIPETEL_1  A stream event source mapping (AWS::Lambda::EventSourceMapping on a DynamoDB or
               Kinesis stream, or a SAM DynamoDB/Kinesis event) must not let one poison record
               block the stream: ReportBatchItemFailures, BisectBatchOnFunctionError: true, a
               bounded MaximumRetryAttempts (0..10000, never -1), a bounded
               MaximumRecordAgeInSeconds (60..604800, never -1) and an OnFailure destination.
CKV_PIPETEL_2  Identity policies (IAM roles/policies/users/groups, SAM function Policies) must not
               use "*" in Action, "*" as Resource, or an unscoped ARN (wildcard service, region,
               account, or a bare "type/*" resource), nor NotAction/NotResource in Allow
               statements. SAM policy templates and managed policies cannot be inspected
               offline, so they fail too (write an explicit AWS::IAM::Role).
               Justified exception: actions that support no resource-level permission at all
               (UNSCOPABLE_ACTIONS below) may use Resource "*".
CKV_PIPETEL_3  Resource policies (KMS key, SNS topic, SQS queue, DynamoDB table) must not allow
               "*" actions or an unconditioned "*" principal. Justified exception: "kms:*" for the
               account root in a KMS key policy (AWS's lockout-safe default, which delegates to IAM),
               and Resource "*" in a key policy (it means "this key").

Values may be intrinsics: {"Ref": Param} is resolved to the parameter's Default and bounds when
checkov has rendered it, otherwise the parameter's MinValue/MaxValue are read from the template
file itself.
"""
from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from typing import Any, Iterable

import yaml
from checkov.cloudformation.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

# Actions with no resource-level permissions (Service Authorization Reference: resource type "*").
UNSCOPABLE_ACTIONS = {
    "xray:puttracesegments",
    "xray:puttelemetryrecords",
    "cloudwatch:putmetricdata",
}

RETRY_MIN, RETRY_MAX = 0, 10000
AGE_MIN, AGE_MAX = 60, 604800


# --------------------------------------------------------------------------- helpers
def _strip(v: Any) -> Any:
    """Drop checkov's __startline__/__endline__ bookkeeping keys."""
    if isinstance(v, dict):
        return {k: _strip(x) for k, x in v.items() if not str(k).startswith("__")}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


def _file_of(v: Any) -> str | None:
    """checkov tags parsed nodes with __file__ (path relative to the working directory)."""
    if isinstance(v, dict):
        f = v.get("__file__")
        if isinstance(f, str) and os.path.isfile(f):
            return f
        for x in v.values():
            f = _file_of(x)
            if f:
                return f
    elif isinstance(v, list):
        for x in v:
            f = _file_of(x)
            if f:
                return f
    return None


def _as_list(v: Any) -> list:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _branches(v: Any) -> Iterable[Any]:
    """Expand Fn::If into both branches (AWS::NoValue dropped)."""
    if isinstance(v, dict) and len(v) == 1 and "Fn::If" in v:
        args = v["Fn::If"]
        if isinstance(args, list) and len(args) == 3:
            for b in args[1:]:
                yield from _branches(b)
            return
    if isinstance(v, dict) and v.get("Ref") == "AWS::NoValue":
        return
    yield v


def _statements(doc: Any) -> Iterable[dict]:
    for d in _branches(doc):
        if not isinstance(d, dict):
            continue
        for st in _as_list(d.get("Statement")):
            for s in _branches(st):
                if isinstance(s, dict):
                    yield s


def _text(v: Any) -> str | None:
    """String form of a value for wildcard analysis; None when it is a concrete reference."""
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        if "Fn::Sub" in v:
            sub = v["Fn::Sub"]
            s = sub[0] if isinstance(sub, list) else sub
            return re.sub(r"\$\{[^}]+\}", "X", s) if isinstance(s, str) else None
        if "Fn::Join" in v:
            parts = v["Fn::Join"]
            if isinstance(parts, list) and len(parts) == 2:
                return str(parts[0]).join(p if isinstance(p, str) else "X" for p in _as_list(parts[1]))
    return None  # Ref / GetAtt / ImportValue: a concrete ARN


def _unscoped_resource(v: Any) -> str | None:
    """Reason if the resource is "*" or an ARN without a concrete scope."""
    s = _text(v)
    if s is None:
        return None
    if s.strip() == "*":
        return 'Resource "*"'
    if s.startswith("arn:"):
        parts = s.split(":", 5)
        if len(parts) < 6:
            return f"malformed ARN {s}"
        _, _partition, service, region, account, res = parts
        if "*" in service or "*" in region or "*" in account:
            return f"ARN with wildcard service/region/account: {s}"
        if re.fullmatch(r"[^/:]*[/:]?\*", res):
            return f"ARN with unscoped resource part: {s}"
    return None


def _actions(st: dict) -> list[str]:
    return [a for a in _as_list(st.get("Action")) if isinstance(a, str)]


@lru_cache(maxsize=32)
def _parameters(path: str) -> dict:
    class _L(yaml.SafeLoader):
        pass

    # tolerate short-form tags if someone adds them (they are forbidden, but must not crash us)
    _L.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        with open(path, encoding="utf-8") as f:
            return (yaml.load(f, Loader=_L) or {}).get("Parameters") or {}
    except Exception:  # noqa: BLE001
        return {}


def _bounds(v: Any, path: str | None) -> tuple[float, float] | None:
    """(lowest, highest) possible value of a number or a Ref to a Number parameter."""
    v = _strip(v)
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return (v, v)
    if isinstance(v, str):
        try:
            n = int(v)
            return (n, n)
        except ValueError:
            return None
    if isinstance(v, dict) and "Ref" in v and path:
        p = _parameters(path).get(v["Ref"])
        if isinstance(p, dict):
            vals = [x for x in _as_list(p.get("AllowedValues")) if isinstance(x, (int, float))]
            if vals:
                return (min(vals), max(vals))
            if "MinValue" in p and "MaxValue" in p:
                return (float(p["MinValue"]), float(p["MaxValue"]))
    return None


def _report(check: BaseResourceCheck, problems: list[str]) -> CheckResult:
    """checkov's CloudFormation runner drops `details`, so say why on stderr."""
    check.details = problems
    where = getattr(check, "entity_path", "") or ""
    for p in problems:
        print(f"  [{check.id}] {where}: {p}", file=sys.stderr)
    return CheckResult.FAILED if problems else CheckResult.PASSED


def _truthy(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.lower() == "true")


# --------------------------------------------------------------------------- CKV_PIPETEL_1
class StreamMappingIsPoisonSafe(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Stream event source mapping reports item failures, bisects, bounds retries/age "
            "and has an OnFailure destination",
            id="CKV_PIPETEL_1",
            categories=[CheckCategories.GENERAL_SECURITY],
            supported_resources=["AWS::Lambda::EventSourceMapping", "AWS::Serverless::Function"],
        )

    @staticmethod
    def _is_stream_mapping(props: dict) -> bool:
        if "StartingPosition" in props:
            return True
        arn = props.get("EventSourceArn") or props.get("Stream")
        if isinstance(arn, dict) and "Fn::GetAtt" in arn:
            ga = arn["Fn::GetAtt"]
            attr = ga[1] if isinstance(ga, list) and len(ga) > 1 else str(ga).split(".")[-1]
            return attr in ("StreamArn", "ConsumerARN") or str(ga).endswith("StreamArn")
        s = _text(arn) or ""
        return ":kinesis:" in s or "/stream/" in s

    def _problems(self, props: dict) -> list[str]:
        path = getattr(self, "_pipetel_path", None)
        problems = []
        if "ReportBatchItemFailures" not in _as_list(props.get("FunctionResponseTypes")):
            problems.append("FunctionResponseTypes lacks ReportBatchItemFailures")
        if not _truthy(props.get("BisectBatchOnFunctionError")):
            problems.append("BisectBatchOnFunctionError is not true")
        b = _bounds(props.get("MaximumRetryAttempts"), path)
        if b is None or b[0] < RETRY_MIN or b[1] > RETRY_MAX:
            problems.append(f"MaximumRetryAttempts missing or unbounded (need {RETRY_MIN}..{RETRY_MAX}, got {b})")
        b = _bounds(props.get("MaximumRecordAgeInSeconds"), path)
        if b is None or b[0] < AGE_MIN or b[1] > AGE_MAX:
            problems.append(f"MaximumRecordAgeInSeconds missing or unbounded (need {AGE_MIN}..{AGE_MAX}, got {b})")
        dest = (props.get("DestinationConfig") or {}).get("OnFailure") or {}
        if not (isinstance(dest, dict) and dest.get("Destination")):
            problems.append("DestinationConfig.OnFailure.Destination missing")
        return problems

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        self._pipetel_path = _file_of(conf)
        conf = _strip(conf)
        props = conf.get("Properties") or {}
        if "Events" in props:  # SAM function: check its stream events
            mappings = [
                (ev.get("Properties") or {})
                for ev in (props.get("Events") or {}).values()
                if isinstance(ev, dict) and ev.get("Type") in ("DynamoDB", "Kinesis")
            ]
        elif "EventSourceArn" in props or "StartingPosition" in props:
            mappings = [props] if self._is_stream_mapping(props) else []
        else:
            mappings = []
        if not mappings:
            return CheckResult.UNKNOWN
        problems = [p for m in mappings for p in self._problems(m)]
        return _report(self, problems)



# --------------------------------------------------------------------------- CKV_PIPETEL_2
def identity_statement_problems(st: dict) -> list[str]:
    if st.get("Effect") != "Allow":
        return []
    problems = []
    sid = st.get("Sid", "<no Sid>")
    if "NotAction" in st or "NotResource" in st:
        problems.append(f"{sid}: NotAction/NotResource in an Allow statement")
    actions = _actions(st)
    wild = [a for a in actions if "*" in a]
    if wild:
        problems.append(f"{sid}: wildcard Action {wild}")
    for r in _as_list(st.get("Resource")):
        for rb in _branches(r):
            reason = _unscoped_resource(rb)
            if reason is None:
                continue
            if reason == 'Resource "*"' and actions and all(a.lower() in UNSCOPABLE_ACTIONS for a in actions):
                continue  # justified: these actions support no resource-level permissions
            problems.append(f"{sid}: {reason}")
    return problems


class IdentityPoliciesAreScoped(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="IAM identity policies use no wildcard actions or unscoped resources",
            id="CKV_PIPETEL_2",
            categories=[CheckCategories.IAM],
            supported_resources=[
                "AWS::IAM::Role",
                "AWS::IAM::Policy",
                "AWS::IAM::ManagedPolicy",
                "AWS::IAM::User",
                "AWS::IAM::Group",
                "AWS::Serverless::Function",
                "AWS::Serverless::StateMachine",
            ],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        conf = _strip(conf)
        rtype = conf.get("Type", "")
        props = conf.get("Properties") or {}
        problems: list[str] = []
        docs: list[Any] = []
        if rtype.startswith("AWS::Serverless::"):
            for pol in _as_list(props.get("Policies")):
                for p in _branches(pol):
                    if isinstance(p, dict) and "Statement" in p:
                        docs.append(p)
                    else:
                        problems.append(
                            f"SAM policy {p!r} is expanded by the SAM transform and cannot be inspected; "
                            "use an explicit AWS::IAM::Role"
                        )
            if not props.get("Policies"):
                return CheckResult.PASSED  # explicit Role: checked as AWS::IAM::Role
        else:
            for pol in _as_list(props.get("Policies")):
                for p in _branches(pol):
                    if isinstance(p, dict):
                        docs.append(p.get("PolicyDocument"))
            if "PolicyDocument" in props:
                docs.append(props["PolicyDocument"])
            for arn in _as_list(props.get("ManagedPolicyArns")):
                s = _text(arn) or ""
                if re.search(r":iam::aws:policy/", s):
                    problems.append(f"AWS managed policy {s} (unscoped; write explicit statements)")
        for doc in docs:
            for st in _statements(doc):
                problems.extend(identity_statement_problems(st))
        return _report(self, problems)


# --------------------------------------------------------------------------- CKV_PIPETEL_3
def _is_account_root(principal: Any) -> bool:
    aws = principal.get("AWS") if isinstance(principal, dict) else None
    for p in _as_list(aws):
        s = _text(p) or ""
        if re.fullmatch(r"arn:[^:]+:iam::[^:]+:root", s) or (isinstance(p, dict) and p.get("Ref") == "AWS::AccountId"):
            return True
    return False


def _principal_is_star(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        return any(v == "*" or (isinstance(v, list) and "*" in v) for v in principal.values())
    return False


class ResourcePoliciesAreScoped(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Resource policies allow no wildcard actions and no unconditioned public principal",
            id="CKV_PIPETEL_3",
            categories=[CheckCategories.IAM],
            supported_resources=[
                "AWS::KMS::Key",
                "AWS::SNS::TopicPolicy",
                "AWS::SQS::QueuePolicy",
                "AWS::DynamoDB::Table",
                "AWS::DynamoDB::ResourcePolicy",
            ],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        conf = _strip(conf)
        rtype = conf.get("Type", "")
        props = conf.get("Properties") or {}
        if rtype == "AWS::KMS::Key":
            docs = [props.get("KeyPolicy")]
        elif rtype == "AWS::DynamoDB::Table":
            docs = [rp.get("PolicyDocument") for rp in _branches(props.get("ResourcePolicy")) if isinstance(rp, dict)]
            if not docs:
                return CheckResult.UNKNOWN
        elif rtype == "AWS::DynamoDB::ResourcePolicy":
            docs = [props.get("PolicyDocument")]
        else:
            docs = [props.get("PolicyDocument")]
        problems = []
        for doc in docs:
            for st in _statements(doc):
                if st.get("Effect") != "Allow":
                    continue
                sid = st.get("Sid", "<no Sid>")
                principal = st.get("Principal")
                if _principal_is_star(principal) and not st.get("Condition"):
                    problems.append(f"{sid}: unconditioned '*' principal")
                if "NotAction" in st or "NotResource" in st or "NotPrincipal" in st:
                    problems.append(f"{sid}: NotAction/NotResource/NotPrincipal in an Allow statement")
                wild = [a for a in _actions(st) if "*" in a]
                if wild and not (rtype == "AWS::KMS::Key" and wild == ["kms:*"] and _is_account_root(principal)):
                    problems.append(f"{sid}: wildcard Action {wild}")
                if rtype != "AWS::KMS::Key":
                    for r in _as_list(st.get("Resource")):
                        for rb in _branches(r):
                            reason = _unscoped_resource(rb)
                            if reason:
                                problems.append(f"{sid}: {reason}")
        return _report(self, problems)


check_stream_mapping = StreamMappingIsPoisonSafe()
check_identity_policies = IdentityPoliciesAreScoped()
check_resource_policies = ResourcePoliciesAreScoped()
