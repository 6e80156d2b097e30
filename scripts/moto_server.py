"""moto in server mode, made as strict as AWS where jotgate depends on it.

1. DynamoDB operations are atomic with respect to each other. moto's threaded server applies
   concurrent TransactWriteItems (and conditional writes) to copies of a table without a
   lock, so two transactions conditioned on the same item can both pass: DynamoDB itself
   serialises them. The store's "exactly one rotation" contract then failed now and then
   under load (seen: 2 of 12 concurrent rotations won). Every operation here takes one
   lock.

2. With JOTGATE_IAM_TEMPLATE=deploy/aws/template.yaml, every DynamoDB, Secrets Manager and
   SSM request is authorised against the IAM policy of the template's API function, read
   from the template itself, the way AWS evaluates it: TransactWriteItems needs the item
   action of each of its items (PutItem, UpdateItem, DeleteItem, ConditionCheckItem),
   BatchGetItem needs dynamodb:BatchGetItem, a Query on an index needs the index's ARN. A
   call the template does not allow gets AWS's AccessDeniedException. (moto's own IAM
   enforcement matches every DynamoDB resource against "*" and checks TransactWriteItems
   as an action of its own, so it can neither refuse a wrong index nor accept a correct
   transaction.) The table-management calls that tests and `create_table=true` make
   (CreateTable, DescribeTable, UpdateTimeToLive, DeleteTable, ListTables) are exempt: the
   template creates the production table, and the function may not call them.

3. Every DynamoDB request is validated against botocore's service model, minimum and
   maximum lengths included (botocore checks only minimums): AWS refuses an index name of
   two characters, moto does not. moto itself checks key sizes, item size and batch sizes.

Usage: [JOTGATE_IAM_TEMPLATE=FILE] python3 scripts/moto_server.py -H HOST -p PORT
"""

import fnmatch
import json
import os
import re
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend

_lock = threading.RLock()


def _serialised(name):
    original = getattr(DynamoDBBackend, name)

    def locked(self, *args, **kwargs):
        with _lock:
            return original(self, *args, **kwargs)

    locked.__name__ = name
    setattr(DynamoDBBackend, name, locked)


# Reads too: a transaction deep-copies the table to roll back, and a concurrent read that
# touches it (expiring items, say) made the copy fail ("dictionary changed size during
# iteration", a 500) at 200 concurrent logouts.
for _name in [n for n, v in vars(DynamoDBBackend).items()
              if callable(v) and not n.startswith("_")]:
    _serialised(_name)


# ---- the template's policy ----

TABLE = "${TABLE_ARN}"
PARAMETER = "${PARAMETER_ARN}"
MANAGEMENT = {"CreateTable", "DescribeTable", "UpdateTimeToLive", "DeleteTable", "ListTables",
              "DescribeTimeToLive"}


def load_template(path):
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {suffix: value}

    Loader.add_multi_constructor("!", tag)
    with open(path) as f:
        return yaml.load(f, Loader=Loader)


def resolve(value):
    """A policy resource as a pattern: the table's ARN and the secrets' parameters become
    placeholders bound at request time."""
    if isinstance(value, str):
        return value
    if "GetAtt" in value and value["GetAtt"] in ("Table.Arn", ["Table", "Arn"]):
        return TABLE
    if "Sub" in value and isinstance(value["Sub"], str):
        return value["Sub"].replace("${Table.Arn}", TABLE)
    if "Ref" in value and str(value["Ref"]).endswith("Arn"):
        return PARAMETER
    raise ValueError(f"cannot read the policy resource {value!r}")


def statements(template, function="ApiFunction"):
    """The Allow statements of `function`'s inline policies; a statement under !If counts
    as present (the deployment sets the secrets)."""
    out = []
    for policy in template["Resources"][function]["Properties"]["Policies"]:
        for st in policy.get("Statement", []):
            if isinstance(st, dict) and "If" in st:
                st = st["If"][1]
            if not isinstance(st, dict) or st.get("Effect") != "Allow":
                continue
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            out.append((actions, [resolve(r) for r in resources]))
    return out


def allowed(policy, action, resource, table_arn):
    for actions, resources in policy:
        if not any(fnmatch.fnmatchcase(action, a) for a in actions):
            continue
        for r in resources:
            pattern = r.replace(TABLE, table_arn)
            # A parameter ARN (a secret) stands for the configured secret: it matches the
            # secret services' reads only, never a DynamoDB resource.
            if r == PARAMETER:
                if not action.startswith("dynamodb:"):
                    return True
            elif fnmatch.fnmatchcase(resource, pattern):
                return True
    return False


def table_arn(handler, name):
    return f"arn:aws:dynamodb:{handler.region}:{handler.current_account}:table/{name}"


def required(handler, op, body):
    """The (action, resource) pairs AWS checks for one DynamoDB request."""
    arn = lambda t: table_arn(handler, t)  # noqa: E731
    if op == "TransactWriteItems":
        pairs = []
        for item in body.get("TransactItems", []):
            for kind, action in (("Put", "PutItem"), ("Update", "UpdateItem"),
                                 ("Delete", "DeleteItem"),
                                 ("ConditionCheck", "ConditionCheckItem")):
                if kind in item:
                    pairs.append((f"dynamodb:{action}", arn(item[kind]["TableName"])))
        return pairs
    if op == "TransactGetItems":
        return [("dynamodb:GetItem", arn(i["Get"]["TableName"]))
                for i in body.get("TransactItems", [])]
    if op in ("BatchGetItem", "BatchWriteItem"):
        return [(f"dynamodb:{op}", arn(t)) for t in body.get("RequestItems", {})]
    table = body.get("TableName", "")
    resource = arn(table)
    if op in ("Query", "Scan") and body.get("IndexName"):
        resource += "/index/" + body["IndexName"]
    return [(f"dynamodb:{op}", resource)]


def access_denied(action, resource):
    print(f"moto_server: AccessDenied {action} on {resource}", file=sys.stderr, flush=True)
    body = json.dumps({
        "__type": "com.amazon.coral.service#AccessDeniedException",
        "message": f"User: arn:aws:sts::123456789012:assumed-role/jotgate-api/test is not "
                   f"authorized to perform: {action} on resource: {resource} because no "
                   f"identity-based policy allows the {action} action (the policy of "
                   f"deploy/aws/template.yaml's ApiFunction)",
    })
    return 400, {"Content-Type": "application/x-amz-json-1.0"}, body


# ---- botocore's service model ----

def model_errors(shape, value, path, errors):
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object")
            return
        for name in shape.required_members:
            if name not in value:
                errors.append(f"{path}: missing required member {name}")
        for name, v in value.items():
            if name not in shape.members:
                errors.append(f"{path}: unknown member {name}")
            else:
                model_errors(shape.members[name], v, f"{path}.{name}", errors)
        return
    if kind in ("string", "list", "map", "blob"):
        n = len(value) if hasattr(value, "__len__") else 0
        if "min" in meta and n < meta["min"]:
            errors.append(f"{path}: length {n} is under the minimum {meta['min']}")
        if "max" in meta and n > meta["max"]:
            errors.append(f"{path}: length {n} is over the maximum {meta['max']}")
    if kind == "string" and "pattern" in meta and isinstance(value, str) \
            and not re.fullmatch(meta["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {meta['pattern']}")
    if kind == "string" and shape.enum and value not in shape.enum:
        errors.append(f"{path}: {value!r} is not one of {shape.enum}")
    if kind == "list" and isinstance(value, list):
        for i, v in enumerate(value):
            model_errors(shape.member, v, f"{path}[{i}]", errors)
    if kind == "map" and isinstance(value, dict):
        for k, v in value.items():
            model_errors(shape.key, k, f"{path} (key {k})", errors)
            model_errors(shape.value, v, f"{path}.{k}", errors)


_model = None


def validate(op, body):
    global _model
    import botocore.session
    if _model is None:
        _model = botocore.session.get_session().get_service_model("dynamodb")
    try:
        shape = _model.operation_model(op).input_shape
    except Exception:
        return None
    errors = []
    if shape is not None:
        model_errors(shape, body, op, errors)
    if not errors:
        return None
    print(f"moto_server: ValidationException {errors[:5]}", file=sys.stderr, flush=True)
    body = json.dumps({
        "__type": "com.amazonaws.dynamodb.v20120810#ValidationException",
        "message": "; ".join(errors[:5]),
    })
    return 400, {"Content-Type": "application/x-amz-json-1.0"}, body


def install(template_path):
    from moto.dynamodb.responses import DynamoHandler

    policy = statements(load_template(template_path)) if template_path else None
    original = DynamoHandler.call_action

    def checked(self):
        target = self.headers.get("X-Amz-Target", "")
        op = target.split(".")[-1]
        try:
            body = json.loads(self.raw_body or b"{}")
        except ValueError:
            body = {}
        refused = validate(op, body)
        if refused:
            return refused
        if policy is not None and op not in MANAGEMENT:
            for action, resource in required(self, op, body):
                table = resource.split(":table/")[-1].split("/")[0]
                if not allowed(policy, action, resource, table_arn(self, table)):
                    return access_denied(action, resource)
        return original(self)

    DynamoHandler.call_action = checked

    if policy is None:
        return
    from moto.secretsmanager.responses import SecretsManagerResponse
    from moto.ssm.responses import SimpleSystemManagerResponse

    for cls, service in ((SecretsManagerResponse, "secretsmanager"),
                         (SimpleSystemManagerResponse, "ssm")):
        def guarded(self, _original=cls.call_action, _service=service):
            op = self.headers.get("X-Amz-Target", "").split(".")[-1]
            action = f"{_service}:{op}"
            if op and not op.startswith(("Create", "Put", "Delete", "Tag")) \
                    and not allowed(policy, action, "*", ""):
                return access_denied(action, "the configured secret")
            return _original(self)
        cls.call_action = guarded


def check_template(path):
    """The template's table, as the CreateTable call CloudFormation makes, against the
    service model, and its API function's policy readable. Exits non-zero on a problem."""
    template = load_template(path)
    props = template["Resources"]["Table"]["Properties"]
    request = {k: v for k, v in props.items()
               if k in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes",
                        "BillingMode", "LocalSecondaryIndexes")}
    request["TableName"] = "jotgate-check"
    refused = validate("CreateTable", request)
    if refused:
        sys.exit(f"{path}: the table would be refused: {json.loads(refused[2])['message']}")
    policy = statements(template)
    print(f"{path}: the table passes the service model; the API function's policy has "
          f"{len(policy)} statements")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check-template"]:
        check_template(sys.argv[2])
        sys.exit(0)
    install(os.environ.get("JOTGATE_IAM_TEMPLATE"))
    from moto.server import main

    main(sys.argv[1:])
