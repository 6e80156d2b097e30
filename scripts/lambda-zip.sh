#!/usr/bin/env bash
# Build the AWS Lambda package: target/lambda/jotgate.zip holding `bootstrap` (the jotgate
# binary, `--profile lambda`: the dist profile — fat LTO, stripped, panic=abort — optimised
# for size) for the provided.al2023 runtime on x86_64. The same zip serves the API function
# and the authorizer (JOTGATE_LAMBDA_MODE); its store is DynamoDB
# (JOTGATE_STORE=dynamodb://TABLE) or SQLite, and it reads secret settings given as Secrets
# Manager / SSM ARNs (feature aws-secrets). PostgreSQL (RDS) is left out of the package;
# JOTGATE_LAMBDA_FEATURES=dynamodb,aws-secrets,postgres puts it back.
#
# `--authorizer-only` builds target/lambda/authorizer.zip instead: `crates/jotgate-authorizer`,
# the authorizer alone (no server, stores or password hashing; settings from the
# environment): 1.8 MiB zipped. It reads JOTGATE_FEED_TOKEN as a value; with
# JOTGATE_AUTHORIZER_FEATURES=aws-secrets also as a Secrets Manager / SSM ARN (2.75 MiB).
#
#   scripts/lambda-zip.sh                                # bootstrap only
#   scripts/lambda-zip.sh --policy deploy/aws/policy.toml  # + policy.toml for the authorizer
#                                                        #   (JOTGATE_POLICY=/var/task/policy.toml)
#   scripts/lambda-zip.sh --authorizer-only --policy deploy/aws/policy.toml
set -euo pipefail
cd "$(dirname "$0")/.."
policy=""
package=jotgate
while [ $# -gt 0 ]; do
  case "$1" in
    --policy)
      policy=${2:?--policy needs a file}
      [ -f "$policy" ] || { echo "lambda-zip.sh: no such policy file: $policy" >&2; exit 2; }
      shift 2 ;;
    --authorizer-only) package=authorizer; shift ;;
    *) echo "usage: scripts/lambda-zip.sh [--authorizer-only] [--policy FILE]" >&2; exit 2 ;;
  esac
done
if [ "$package" = jotgate ]; then
  cargo build --profile lambda --locked -p jotgate --no-default-features \
    --features "${JOTGATE_LAMBDA_FEATURES:-dynamodb,aws-secrets}"
  bin=target/lambda/jotgate
else
  cargo build --profile lambda --locked -p jotgate-authorizer \
    ${JOTGATE_AUTHORIZER_FEATURES:+--features "$JOTGATE_AUTHORIZER_FEATURES"}
  bin=target/lambda/jotgate-authorizer
fi
BIN="$bin" ZIP="target/lambda/$package.zip" POLICY="$policy" python3 - <<'PY'
import os, zipfile
def entry(name, mode):
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info
out, binary = os.environ["ZIP"], os.environ["BIN"]
with zipfile.ZipFile(out, "w") as z:
    with open(binary, "rb") as f:
        z.writestr(entry("bootstrap", 0o100755), f.read(), compresslevel=9)  # executable
    if os.environ["POLICY"]:
        with open(os.environ["POLICY"], "rb") as f:
            z.writestr(entry("policy.toml", 0o100644), f.read(), compresslevel=9)
print(f"{out}: {os.path.getsize(out) / 2**20:.2f} MiB (bootstrap {os.path.getsize(binary) / 2**20:.1f} MiB)")
PY
# provided.al2023 has glibc 2.34: the binary must not need a newer one.
need=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1)
echo "newest glibc symbol needed: $need (provided.al2023 has GLIBC_2.34)"
